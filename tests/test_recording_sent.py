"""The recording's user channel is the audio the call sent: with a caller chain (noise, a phone
line, a step's own chain), the bytes the Composer produced, rebuilt in analysis; without one, the
recording it always was."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.outcomes import MEASURED
from uvbench.analysis import spool
from uvbench.audio import recording
from uvbench.audio.pacer import Composer
from uvbench.audio.recording import (
    SentAudio,
    call_segments,
    clip_chain,
    recording_samples,
    segments,
    sent_audio,
    user_audio,
    write_recording,
)
from uvbench.audio.transforms import Chain, Gain, Noise, Telephone
from uvbench.call.caller import call_stream, clip_audio, plan_stream
from uvbench.call.engine import CallContext, CallResult
from uvbench.call.plan import Endpoint, plan_for
from uvbench.call.timeline import Timeline
from uvbench.listener import Listener, ListenerConfig
from uvbench.report.run_folder import RunFolder
from uvbench.runner.run import run_call_of
from uvbench.scenario import parse_scenarios
from uvbench.server.process import ServerProcess

NS = 1_000_000_000
T0 = 5 * NS
NOWHERE = Endpoint("http://127.0.0.1:9/api", "key", "local", True)


def scenario(body: str):
    (one,) = parse_scenarios(textwrap.dedent(body), source="t.yaml", base_dir=".")
    return one


def noisy_phone(out_rate: int):
    # The scenario's chain on the first clip, the second step's own (a gain) on the second; the
    # noise over everything, then the line.
    return scenario(
        f"""
        name: noisy_phone
        call: {{medium: {{serverWebSocket: {{inputSampleRate: 16000, outputSampleRate: {out_rate}}}}}}}
        caller: {{noise: {{file: pink.flac, snr_db: 10}}, telephone: ulaw}}
        script:
          - say: hello_16k.wav
          - say: yes_16k.wav
            caller: {{gain_db: -6}}
        """
    )


def drive_call(plan, steps, silences: list[int], tail: int) -> tuple[CallResult, bytes]:
    """A call's user side as the engine and the script make it, without a socket: the engine's own
    context (its composer and noise stream), each clip through its chain as `_speak` queues it and
    the entry `_speak` keeps. The chunks the composer produced, back to back."""
    timeline = Timeline(T0, 0)
    timeline.add(T0, "pacer.started", t0_ns=T0, sample_rate=plan.input_rate, chunk_samples=plan.chunk_samples)
    result = CallResult(plan, timeline)
    ctx = CallContext(plan, timeline, result)
    composer, out = ctx.composer, []
    for step, silent in zip(steps, silences, strict=True):
        for _ in range(silent):
            out.append(composer.chunk(composer.next_chunk))
        chain = step.caller.chain() if step.caller is not None else plan.caller
        u = composer.enqueue(clip_audio(step.path, plan.input_rate, chain).pcm)
        result.user_audio.append((u.start_sample, step.path, chain))
        while composer.samples_sent < u.end_sample:
            out.append(composer.chunk(composer.next_chunk))
    for _ in range(tail):
        out.append(composer.chunk(composer.next_chunk))
    result.samples_sent = composer.samples_sent
    return result, b"".join(out)


def written(placed, rate: int) -> np.ndarray:
    buffer = io.BytesIO()
    write_recording(buffer, placed, rate)
    buffer.seek(0)
    audio, read_rate = sf.read(buffer, dtype="int16", always_2d=True)
    assert read_rate == rate
    return audio


def nobody(rate: int):
    return Listener(ListenerConfig(sample_rate=rate)).finish(T0)


@pytest.mark.parametrize("out_rate", [16000, 24000, 8000])
def test_a_noisy_phone_call_records_the_bytes_its_composer_sent(monkeypatch, out_rate):
    monkeypatch.setattr(recording, "BLOCK_S", 1)  # blocks of the file cross the rebuilt blocks
    one = noisy_phone(out_rate)
    # A numbered call of a seeded run: its own noise start, which the rebuild must find again.
    plan = plan_for(one, NOWHERE, run_seed=11, call_identity="7")
    assert plan.input_rate == 16000 and plan.output_rate == out_rate
    # 18 s in all: longer than the noise's 12 s loop, so the bed wraps mid-call.
    result, chunks = drive_call(plan, one.script, silences=[300, 350], tail=60)
    sent = np.frombuffer(chunks, dtype=np.int16)
    assert sent.size == result.samples_sent > 12 * 16000
    assert sent[: 300 * plan.chunk_samples].any()  # noise in the silences: not the clean clips

    left = written(call_segments(result, nobody(out_rate)), out_rate)[:, 0]
    if out_rate == plan.input_rate:
        assert np.array_equal(left, sent)  # sample for sample
    else:
        assert np.array_equal(left, recording._resample(sent, plan.input_rate, out_rate))


def test_the_rebuilt_stream_is_the_same_however_it_is_sliced():
    one = noisy_phone(24000)
    plan = plan_for(one, NOWHERE)
    result, _ = drive_call(plan, one.script, silences=[40, 20], tail=10)
    stream = plan_stream(plan)
    sent = sent_audio(result.user_audio, stream, result.samples_sent, 16000, 24000)
    whole = np.asarray(sent)
    assert whole.size == len(sent) > 0
    assert np.array_equal(sent[1000:30000], whole[1000:30000])  # starts over from the start
    assert np.array_equal(sent[30000:30001], whole[30000:30001])  # front to back, one sample
    assert np.array_equal(sent[90000:], whole[90000:])  # skips ahead
    # The stream given stays at the call's start: a fresh copy mixes what the call's did.
    again = sent_audio(result.user_audio, stream, result.samples_sent, 16000, 24000)
    assert np.array_equal(np.asarray(again), whole)
    with pytest.raises(TypeError):
        sent[5]


def test_a_clean_call_records_its_clips_as_before():
    one = scenario(
        """
        name: clean
        script:
          - say: hello_16k.wav
          - say: yes_16k.wav
        """
    )
    plan = plan_for(one, NOWHERE)
    result, _ = drive_call(plan, one.script, silences=[25, 30], tail=5)
    assert [clip_chain(entry) for entry in result.user_audio] == [None, None]
    rows = result.timeline
    n = plan.chunk_samples
    for k in range(result.samples_sent // n):  # every chunk left 3 ms late
        rows.chunk_sent(
            T0 + (k + 1) * n * NS // 16000, T0 + (k + 1) * n * NS // 16000 + 3_000_000, k * n, (k + 1) * n
        )
    old = [(start, path) for start, path, _ in result.user_audio]  # entries as they were kept before
    before = segments(
        rows,
        nobody(16000),
        user_audio(old, 16000, 16000),
        np.zeros(0, np.int16),
        input_rate=16000,
        output_rate=16000,
    )
    now = call_segments(result, nobody(16000))
    assert [(s.channel, s.offset) for s in now] == [(s.channel, s.offset) for s in before]
    assert np.array_equal(recording_samples(now), recording_samples(before))
    # What it is: each clean clip from its stream time plus its chunk's lateness (3 ms), and
    # nothing between: a clean call sends silence there.
    first = result.user_audio[0][0]
    assert now[0].offset == first + 48 and not recording_samples(now)[: first + 48, 0].any()
    # An old result (entries of two) records the same.
    result.user_audio = old
    assert np.array_equal(recording_samples(call_segments(result, nobody(16000))), recording_samples(before))


def test_a_step_chain_alone_still_records_the_stream_sent():
    one = scenario(
        """
        name: step_only
        script:
          - say: hello_16k.wav
            caller: {telephone: alaw}
        """
    )
    plan = plan_for(one, NOWHERE)
    assert plan.caller is None
    result, chunks = drive_call(plan, one.script, silences=[10], tail=3)
    left = recording_samples(call_segments(result, nobody(16000)))[:, 0]
    assert np.array_equal(left, np.frombuffer(chunks, dtype=np.int16))
    assert not np.array_equal(left[10 * 320 :][:1000], clip_audio(one.script[0].path, 16000, None).pcm[:1000])


def test_the_spool_keeps_each_clips_chain(tmp_path):
    one = noisy_phone(16000)
    plan = plan_for(one, NOWHERE)
    result, _ = drive_call(plan, one.script, silences=[5, 5], tail=1)
    path = tmp_path / "1.call"
    spool.save(result, path)
    back = spool.load(path, plan)
    assert back.user_audio == result.user_audio
    assert [clip_chain(e) for e in back.user_audio] == [plan.caller, Chain((Gain(-6.0),))]
    assert clip_chain(back.user_audio[0]).noise == plan.caller.noise


def test_through_the_spool_the_analysis_finds_the_calls_own_noise_start(tmp_path):
    one = noisy_phone(16000)
    plan = plan_for(one, NOWHERE, run_seed=4, call_identity="12")
    assert plan.call_noise_seed != plan_for(one, NOWHERE).call_noise_seed
    result, chunks = drive_call(plan, one.script, silences=[20, 10], tail=5)
    path = tmp_path / "2.call"
    spool.save(result, path)
    back = spool.load(path, plan_for(one, NOWHERE))  # as the analysis process rebuilds the plan
    assert (back.plan.run_seed, back.plan.call_identity) == (4, "12")
    left = recording_samples(call_segments(back, nobody(16000)))[:, 0]
    assert np.array_equal(left, np.frombuffer(chunks, dtype=np.int16))


def test_a_noise_bed_is_sliced_from_its_loop_not_built_for_the_call():
    noise = Noise(snr_db=0, samples=np.random.default_rng(3).standard_normal(1600), sample_rate=16000, seed=2)
    chain = Chain((noise, Telephone("ulaw")))
    stream = call_stream(chain, 16000, 0.1)
    loop = stream._bed.size
    sent = SentAudio([], stream, 20 * loop + 7, 16000, 16000)
    left = sent[0 : len(sent)]
    assert np.array_equal(left[:loop], left[loop : 2 * loop])  # the loop, over and over
    fresh = call_stream(chain, 16000, 0.1)
    assert np.array_equal(left, fresh.process(np.zeros(len(sent), dtype=np.int16)))


@pytest.fixture(scope="module")
def endpoint():
    with ServerProcess({"agent": {"latency": {"kind": "fixed", "ms": 100}}}) as server:
        yield Endpoint(server.api_url, server.api_key, "local", True)


async def test_a_real_noisy_phone_calls_recording_holds_what_it_sent(endpoint, tmp_path, monkeypatch):
    one = scenario(
        """
        name: noisy_phone_call
        call: {firstSpeakerSettings: {user: {}}, vadSettings: {frameActivationThreshold: 0.5}}
        caller: {noise: {file: pink.flac, snr_db: 20}, telephone: ulaw}
        script:
          - say: hello_16k.wav
          - wait_for: agent_done
          - hang_up
        """
    )
    chunks: list[bytes] = []
    mixed = Composer._mixed_chunk

    def kept(self: Composer, k: int) -> bytes:
        chunk = mixed(self, k)
        chunks.append(chunk)
        return chunk

    monkeypatch.setattr(Composer, "_mixed_chunk", kept)  # bound when the call's composer is made
    folder = RunFolder(tmp_path, "sent")
    result, metrics, _, record = await run_call_of(one, endpoint, folder=folder)
    assert metrics.outcome in MEASURED, metrics.outcome_detail
    sent = np.frombuffer(b"".join(chunks), dtype=np.int16)
    assert sent.size == result.samples_sent > 0
    audio, rate = sf.read(Path(folder.path) / record["artifacts"]["recording"], dtype="int16", always_2d=True)
    assert rate == result.plan.input_rate == result.plan.output_rate
    assert np.array_equal(audio[: sent.size, 0], sent)
    assert not audio[sent.size :, 0].any()  # nothing after the stream ended
    assert audio[:, 1].any()  # the agent answered
