"""Caller audio in scenarios and in the outgoing stream: `caller:` and `network:` (issue 14)."""

from __future__ import annotations

import math
import re
import textwrap

import numpy as np
import pytest

from tests.outcomes import MEASURED
from uvbench.audio.impairment import Bursts, Jitter, Mix, Stalls
from uvbench.audio.pacer import Composer
from uvbench.audio.source import load_pcm
from uvbench.audio.transforms import Chain, Gain, Telephone, speech_rms
from uvbench.call.caller import call_stream, clip_audio, clip_bounds, speech_level
from uvbench.call.engine import CallContext, CallResult
from uvbench.call.plan import Endpoint, plan_for
from uvbench.call.timeline import Timeline
from uvbench.runner.run import run_call_of
from uvbench.scenario import ScenarioError, parse_scenarios
from uvbench.server.process import ServerProcess

NOWHERE = Endpoint("http://127.0.0.1:9/api", "key", "local", True)


def scenario(body: str):
    (one,) = parse_scenarios(textwrap.dedent(body), source="t.yaml", base_dir=".")
    return one


def drive(composer: Composer, steps: list[tuple[int, np.ndarray | None]], tail: int = 10) -> bytes:
    """Chunks of a call: for each (silent chunks, clip) that many chunks of silence, then the clip
    queued and sent; then `tail` more chunks. No network: the Composer alone."""
    out = []
    for silent, pcm in steps:
        for _ in range(silent):
            out.append(composer.chunk(composer.next_chunk))
        if pcm is not None:
            u = composer.enqueue(pcm)
            while composer.samples_sent < u.end_sample:
                out.append(composer.chunk(composer.next_chunk))
    for _ in range(tail):
        out.append(composer.chunk(composer.next_chunk))
    return b"".join(out)


def db(x: float) -> float:
    return 20 * math.log10(x)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


@pytest.mark.parametrize(("snr", "gain"), [(20, None), (0, None), (10, -6)])
def test_noise_fills_the_silences_and_sits_at_the_snr_over_the_speech_bounds(snr, gain):
    gain_key = f"gain_db: {gain}, " if gain is not None else ""
    one = scenario(
        f"""
        name: noisy
        caller: {{{gain_key}noise: {{file: pink.flac, snr_db: {snr}}}}}
        script:
          - say: hello_16k.wav
        """
    )
    plan = plan_for(one, NOWHERE)
    rate, n = plan.input_rate, plan.chunk_samples
    step = one.script[0]
    clean = clip_audio(step.path, rate, plan.caller).pcm  # the clip side: the gain, if any
    start, end = clip_bounds(step, clean.size, rate)
    assert plan.speech_level == pytest.approx(rms(clean[start:end] / 32768), rel=1e-3)

    composer = Composer(n, stream=call_stream(plan.caller, rate, plan.speech_level))
    lead = 25  # half a second of silence before the clip
    sent = np.frombuffer(drive(composer, [(lead, clean)]), dtype=np.int16).astype(np.float64)

    silence = sent[: lead * n]
    noise_level = plan.speech_level / 10 ** (snr / 20)
    assert rms(silence) > 0  # the room does not go quiet between turns
    assert db(rms(silence / 32768)) == pytest.approx(db(noise_level), abs=1.5)  # a short stretch

    at = lead * n
    speech = clean[start:end].astype(np.float64)
    residual = sent[at + start : at + end] - speech
    assert db(rms(speech) / rms(residual)) == pytest.approx(snr, abs=0.5)
    assert sent[at + end + 10 * n - 1] != 0 or rms(sent[at + clean.size :]) > 0  # noise after it too


def test_a_telephone_line_band_limits_the_clip_in_the_sent_stream():
    one = scenario(
        """
        name: phone
        caller: {telephone: ulaw}
        script:
          - say: hello_16k.wav
        """
    )
    plan = plan_for(one, NOWHERE)
    rate = plan.input_rate
    clean = load_pcm(one.script[0].path, rate)
    composer = Composer(plan.chunk_samples, stream=call_stream(plan.caller, rate, plan.speech_level))
    assert composer.stream is None  # no noise: the plain composer
    pcm = clip_audio(one.script[0].path, rate, plan.caller).pcm
    sent = np.frombuffer(drive(composer, [(0, pcm)], tail=0), dtype=np.int16)
    assert not sent[clean.size :].any()  # the last chunk's padding
    sent = sent[: clean.size]

    def above_4k(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(x.size, 1 / rate)
        return 10 * math.log10(spectrum[freqs > 4000].sum() / spectrum.sum())

    assert above_4k(clean) > -35  # the synthesized clip has energy up there
    assert above_4k(sent) < -50  # the line has none
    assert above_4k(sent) < above_4k(clean) - 20


@pytest.mark.parametrize(
    "caller",
    [
        "{gain_db: -6}",
        "{reverb: {room_size: 0.8, wet: 0.5}}",
        "{telephone: alaw}",
        "{telephone: band, codec: gsm}",
        "{codec: {kind: mp3, vbr_quality: 4}}",
    ],
)
def test_transforms_keep_the_clip_length_so_the_speech_bounds_hold(caller):
    one = scenario(
        f"""
        name: bounds
        caller: {caller}
        script:
          - say: question_22k.flac
        """
    )
    plan = plan_for(one, NOWHERE)
    step = one.script[0]
    clean = load_pcm(step.path, plan.input_rate)
    rendered = clip_audio(step.path, plan.input_rate, plan.caller)
    assert rendered.pcm.size == clean.size
    assert clip_bounds(step, rendered.pcm.size, plan.input_rate) == clip_bounds(
        step, clean.size, plan.input_rate
    )
    assert not np.array_equal(rendered.pcm, clean)  # the chain did something
    assert clip_audio(step.path, plan.input_rate, plan.caller) is rendered  # once per clip and chain


def test_a_call_without_caller_sends_the_same_bytes_as_before():
    one = scenario(
        """
        name: clean
        script:
          - say: hello_16k.wav
          - say: yes_16k.wav
        """
    )
    plan = plan_for(one, NOWHERE)
    assert plan.caller is None and plan.speech_level is None and plan.network is None
    assert plan.caller_label == "clean" and plan.network_label == "none"
    ctx = CallContext(plan, Timeline(0, 0), CallResult(plan, Timeline(0, 0)))
    assert ctx.composer.stream is None and ctx.caller_stream is None
    assert ctx.composer.chunk.__func__ is Composer.chunk  # not rebound: the same fast paths
    clips = [clip_audio(s.path, plan.input_rate, plan.caller).pcm for s in one.script]
    assert clips[0] is load_pcm(one.script[0].path, plan.input_rate)  # no copy, no render
    steps = [(7, clips[0]), (3, clips[1])]
    old = Composer(plan.chunk_samples)
    assert drive(ctx.composer, steps) == drive(old, steps)


def test_a_step_caller_replaces_the_scenarios_for_its_clip():
    one = scenario(
        """
        name: steps
        caller: {gain_db: -6, noise: {file: pink.flac, snr_db: 20}}
        script:
          - say: hello_16k.wav
          - say: yes_16k.wav
            caller: {telephone: alaw}
        """
    )
    plan = plan_for(one, NOWHERE)
    rate = plan.input_rate
    first, second = one.script
    assert first.clip_caller(one.caller) is one.caller
    assert second.clip_caller(one.caller).label == "alaw"
    clean = [load_pcm(s.path, rate) for s in one.script]
    assert np.array_equal(
        clip_audio(first.path, rate, plan.caller).pcm, Chain((Gain(-6),)).apply_clip(clean[0], rate)
    )
    assert np.array_equal(
        clip_audio(second.path, rate, second.caller.chain()).pcm,
        Chain((Telephone("alaw"),)).apply_clip(clean[1], rate),
    )
    # The noise is set against the speech as it meets the noise: the first clip after its gain,
    # the second without (its own caller has none).
    expected = speech_rms(
        [
            (clean[0] * 10 ** (-6 / 20) / 32768, *clip_bounds(first, clean[0].size, rate)),
            (clean[1], *clip_bounds(second, clean[1].size, rate)),
        ]
    )
    assert speech_level(one, rate) == pytest.approx(expected, rel=1e-9)


def test_matrix_axes_sweep_caller_and_network_with_their_labels():
    variants = parse_scenarios(
        textwrap.dedent(
            """
            name: sweep
            caller: {noise: {file: cafe.flac, snr_db: 30}}
            matrix:
              caller.noise.snr_db: [30, 20, 10, 0]
              caller.telephone: [null, ulaw]
              network.jitter.mean_ms: [0, 20, 80]
            script:
              - say: hello_16k.wav
            """
        ),
        source="t.yaml",
        base_dir=".",
    )
    assert len(variants) == 4 * 2 * 3
    names = {v.name for v in variants}
    assert "sweep[caller.noise.snr_db=10,caller.telephone=null,network.jitter.mean_ms=0]" in names
    assert "sweep[caller.noise.snr_db=0,caller.telephone=ulaw,network.jitter.mean_ms=80]" in names
    by_name = {v.name: v for v in variants}
    v = by_name["sweep[caller.noise.snr_db=10,caller.telephone=ulaw,network.jitter.mean_ms=20]"]
    assert v.variant == {"caller.noise.snr_db": 10, "caller.telephone": "ulaw", "network.jitter.mean_ms": 20}
    assert v.caller_label == "snr=10dB+ulaw"
    assert v.network_label == "jitter=20ms"
    assert v.caller.noise.path.name == "cafe.flac"
    labels = {(v.caller_label, v.network_label) for v in variants}
    assert len(labels) == len(variants)
    assert plan_for(v, NOWHERE).network == Jitter(20)


BAD = [
    ("caller: {gain_db: 30}", "caller.gain_db: gain 30 dB is outside -40..20 dB"),
    ("caller: {noise: {file: pink.flac, snr_db: 90}}", "caller.noise.snr_db: noise snr 90 dB is outside"),
    ("caller: {noise: {file: cafe.flc, snr_db: 10}}", 'caller.noise.file: noise file "cafe.flc" not found'),
    ("caller: {noise: {file: cafe.flc, snr_db: 10}}", 'did you mean "cafe.flac"?'),
    ("caller: {noise: {snr_db: 10}}", 'caller.noise: missing key "file"'),
    ("caller: {telephone: ulow}", 'caller.telephone: telephone "ulow" is not a line (did you mean "ulaw"?'),
    ("caller: {codec: opus}", "caller.codec.kind: codec 'opus' is not one of 'gsm', 'mp3'"),
    ("caller: {codec: {kind: mp3, vbr_quality: 12}}", "caller.codec.vbr_quality: mp3 vbr_quality 12"),
    ("caller: {codec: {kind: gsm, vbr_quality: 2}}", "caller.codec.vbr_quality: codec gsm has one bitrate"),
    ("caller: {reverb: {room_size: 2}}", "caller.reverb.room_size: reverb room_size 2 is outside 0..1"),
    ("caller: {reverb: {wet: -1}}", "caller.reverb.wet: reverb wet -1 is outside 0..1"),
    ("caller: {gian_db: 3}", 'caller.gian_db: unknown key (did you mean "gain_db"?)'),
    ("network: {jitter: {mean_ms: 50, max_ms: 10}}", "network.jitter.max_ms: 10 is below mean_ms 50"),
    ("network: {bursts: {hold_ms: 500, every_ms: 100}}", "network.bursts.every_ms: 100 is not over hold_ms"),
    ("network: {stalls: {rate_per_min: 0, duration_ms: 100}}", "network.stalls.rate_per_min: 0"),
    ("network: {jitter: {mean_ms: -5}}", "network.jitter.mean_ms: -5 is negative"),
    (
        "network: {jitter: {mean_ms: 2000}, stalls: {rate_per_min: 1, duration_ms: 9000}}",
        "network: mix: its worst delay 10000 + 9000 = 19000 ms is over the limit",
    ),
    ("network: {jiter: {mean_ms: 5}}", 'network.jiter: unknown key (did you mean "jitter"?)'),
]


@pytest.mark.parametrize(("line", "expected"), BAD)
def test_every_problem_is_one_line_with_file_line_and_column(line, expected):
    text = f"name: x\n{line}\nscript:\n  - say: hello_16k.wav\n"
    with pytest.raises(ScenarioError) as info:
        parse_scenarios(text, source="t.yaml", base_dir=".")
    message = str(info.value)
    assert "\n" not in message, message
    assert re.match(r"^t\.yaml:2:\d+: ", message), message
    assert expected in message


def test_a_step_may_not_set_the_noise():
    text = textwrap.dedent(
        """
        name: x
        script:
          - say: hello_16k.wav
          - barge_in: yes_16k.wav
            caller: {noise: {file: pink.flac, snr_db: 10}}
        """
    )
    with pytest.raises(ScenarioError) as info:
        parse_scenarios(text, source="t.yaml", base_dir=".")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("t.yaml:6:14: script[1].caller.noise: a step cannot set noise")
    assert "the noise bed runs over the whole call" in message


def test_the_network_key_becomes_the_plans_impairment():
    one = scenario(
        """
        name: net
        network:
          stalls: {rate_per_min: 2, duration_ms: 300}
          jitter: {mean_ms: 20, max_ms: 120}
          bursts: {hold_ms: 200, every_ms: 1000}
          seed: 7
        script:
          - say: hello_16k.wav
        """
    )
    expected = Mix([Jitter(20, 120), Bursts(200, 1000), Stalls(2, 300)])  # in that order, whatever the keys'
    assert one.network.spec() == expected
    plan = plan_for(one, NOWHERE)
    assert plan.network == expected and plan.network_seed == 7
    assert plan.network_label == expected.label == one.network_label
    assert plan.caller is None  # a network alone changes no audio

    single = scenario(
        "name: one\nnetwork: {bursts: {hold_ms: 100, every_ms: 500}}\nscript: [say: yes_16k.wav]"
    )
    assert plan_for(single, NOWHERE).network == Bursts(100, 500)
    assert plan_for(single, NOWHERE).network_seed is None


@pytest.fixture(scope="module")
def endpoint():
    with ServerProcess({"agent": {"latency": {"kind": "fixed", "ms": 100}}}) as server:
        yield Endpoint(server.api_url, server.api_key, "local", True)


async def test_a_real_call_with_room_noise_completes_and_records_its_chain(endpoint):
    one = scenario(
        """
        name: noisy_call
        call: {firstSpeakerSettings: {user: {}}, vadSettings: {frameActivationThreshold: 0.5}}
        caller: {noise: {file: pink.flac, snr_db: 20}}
        script:
          - say: hello_16k.wav
          - wait_for: agent_done
          - hang_up
        """
    )
    # At 20 dB this noise (-41 dBFS) is over the local server's default VAD threshold (-47 dBFS):
    # it would hear the caller talk on and never take its turn, as an agent would. Tuned to -35.
    result, metrics, _, _ = await run_call_of(one, endpoint)
    assert metrics.outcome in MEASURED, metrics.outcome_detail
    config = result.timeline.first("call.config").data
    assert config["caller"] == "snr=20dB" and config["network"] == "none"
    (audio,) = result.timeline.of_kind("caller.audio")
    assert audio.data == {"chain": "snr=20dB", "snr_db": 20.0, "clipped_samples": 0}
    (queued,) = result.timeline.of_kind("utterance.queued")
    step = one.script[0]
    clean = load_pcm(step.path, 16000)
    start, end = clip_bounds(step, clean.size, 16000)
    assert queued.data["speech_start_sample"] - queued.data["start_sample"] == start
    assert queued.data["speech_end_sample"] - queued.data["start_sample"] == end
    assert queued.data["end_sample"] - queued.data["start_sample"] == clean.size
