"""After a call: the hand-over from the pacing process, the figures and checks in one pass (the same
as recomputing the saved timeline), what the live script knew replayed, the record policy."""

from __future__ import annotations

import pickle
import textwrap
from array import array
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from uvbench.analysis import spool
from uvbench.analysis.call import (
    BytesSink,
    analyse_call,
    figures,
    keeps_recording,
    live_of,
    reached_expectations,
)
from uvbench.call.engine import CallResult
from uvbench.call.plan import Endpoint, plan_for
from uvbench.call.rest import UltravoxApi
from uvbench.call.timeline import Timeline
from uvbench.metrics import compute
from uvbench.scenario import parse_scenarios

NS = 1_000_000_000
MS = 1_000_000
T0 = 10 * NS
CORPUS = Path(__file__).parents[1] / "audio_corpus"


def scenario(record: str = "all"):
    (one,) = parse_scenarios(
        textwrap.dedent(
            f"""\
            name: analysed
            call:
              selectedTools:
                - temporaryTool: {{modelToolName: lookupOrder, description: orders, client: {{}}}}
            client: {{record: {record}}}
            script:
              - wait_for: agent_done
              - say: yes_16k.wav
              - wait_for: agent_done
              - expect:
                  - transcript_contains: order
                    role: agent
                  - tool_called: lookupOrder
              - expect:
                  - transcript_contains: never
                    role: agent
            """
        ),
        source="analysed.yaml",
        base_dir=".",
    )
    return one


def call(tmp_path: Path, *, reached: int = 2, record: str = "all") -> CallResult:
    """A finished call as the wire leaves it: a greeting, a turn answered, a tool call, both
    expect steps reached (or only the first)."""
    one = scenario(record)
    endpoint = Endpoint("http://127.0.0.1:9/api", "key", "local", True)
    timeline = Timeline(T0, 0)
    add = timeline.add
    add(T0, "call.config", input_sample_rate=16000, output_sample_rate=16000, chunk_ms=20, honor_clear=True,
        prebuffer_ms=0, client_buffer_ms=60)  # fmt: skip
    add(T0 + 10 * MS, "call.create_sent", attempt=1)
    add(T0 + 20 * MS, "call.created", call_id=None, join_url="ws://x")
    add(T0 + 25 * MS, "ws.connect_started")
    add(T0 + 30 * MS, "ws.open")
    add(T0 + 30 * MS, "pacer.started", t0_ns=T0 + 30 * MS, sample_rate=16000, chunk_samples=320)
    frames = []
    for k in range(200):  # 4 s of outgoing chunks, all on time
        due = T0 + 30 * MS + (k + 1) * 20 * MS
        timeline.chunk_sent(due, due + 50_000, k * 320, (k + 1) * 320)
    msg = {"type": "transcript", "role": "agent", "medium": "voice", "final": True, "ordinal": 0}
    msg["text"] = "Hello, your order?"
    for k in range(25):  # the greeting: 0.5 s of audio from 0.3 s
        t = T0 + 330 * MS + k * 20 * MS
        timeline.frame_received(t, 320, 0, 319)
        frames.append(np.full(320, 1000 + k, dtype=np.int16))
    add(T0 + 900 * MS, "msg.in", message=msg)
    add(T0 + 1000 * MS, "utterance.queued", step=1, kind="say", file="yes_16k.wav", start_sample=16000,
        speech_start_sample=16100, speech_end_sample=24000, end_sample=25000)  # fmt: skip
    tool = {
        "type": "client_tool_invocation",
        "toolName": "lookupOrder",
        "invocationId": "i1",
        "parameters": {},
    }
    add(T0 + 2200 * MS, "msg.in", message=tool)
    for k in range(10):  # the reply, after t_se (1.53 s)
        t = T0 + 2300 * MS + k * 20 * MS
        timeline.frame_received(t, 320, 0, 319)
        frames.append(np.full(320, -1000 - k, dtype=np.int16))
    add(T0 + 2600 * MS, "msg.in", message={**msg, "text": "Your order shipped.", "ordinal": 2})
    for index in range(reached):
        add(T0 + 3000 * MS + index, "step.finished", index=3 + index, kind="expect", ok=True)
    add(T0 + 4000 * MS, "pacer.stopped", samples_sent=64000, samples_due=64000, drift_ms=0.0)
    add(T0 + 4010 * MS, "ws.closed", code=1000, reason="", by="client")
    audio = tmp_path / "agent.pcm"
    audio.write_bytes(np.concatenate(frames).astype("<i2").tobytes())
    plan = plan_for(one, endpoint, agent_audio_path=audio)
    return CallResult(plan, timeline, user_audio=[(16000, CORPUS / "yes_16k.wav")], samples_sent=64000,
                      agent_audio_path=audio)  # fmt: skip


def test_the_spool_gives_back_the_call_as_it_was_handed_over(tmp_path):
    result = call(tmp_path)
    path = tmp_path / "1.call"
    spool.save(result, path)
    back = spool.load(path, result.plan)
    assert back.timeline.to_json() == result.timeline.to_json()
    assert (back.user_audio, back.agent_audio_path, back.samples_sent) == (
        result.user_audio,
        result.agent_audio_path,
        result.samples_sent,
    )
    assert not path.with_name("1.call.tmp").exists()


def test_the_spool_keeps_the_network_impairments_releases_and_refuses_another_version(tmp_path):
    result = call(tmp_path)
    rows = len(result.timeline.audio_out) // 4
    result.timeline.audio_out_release = array("q", range(1000, 1000 + rows))
    path = tmp_path / "1.call"
    spool.save(result, path)
    back = spool.load(path, result.plan)
    # Without them the analysis would read the link's delay as the generator's lateness.
    assert back.timeline.impaired and list(back.timeline.audio_out_release) == list(range(1000, 1000 + rows))
    assert back.timeline.to_json() == result.timeline.to_json()
    path.write_bytes(pickle.dumps((2, "an older layout")))
    with pytest.raises(ValueError, match="spool version 2, expected 3"):
        spool.load(path, result.plan)


def test_figures_and_checks_in_one_pass_are_what_the_saved_timeline_computes_to(tmp_path):
    result = call(tmp_path)
    one = scenario()
    assert [step for step, _ in reached_expectations(one, result.timeline)] == [3, 3, 4]
    metrics, checks = figures(result, one)
    assert [c.ok for c in checks] == [True, True, False]
    assert metrics.outcome == "failed:expect"
    assert (metrics.outcome_detail or "").startswith("step 4: agent transcript contains 'never'")
    again = compute(result.timeline)  # what `uvbench report` will compute from the saved timeline
    assert again.to_json() == metrics.to_json()


def test_an_expect_step_the_script_did_not_reach_is_not_checked(tmp_path):
    result = call(tmp_path, reached=1)
    metrics, checks = figures(result, scenario())
    assert [c.ok for c in checks] == [True, True] and metrics.outcome == "completed"


def test_the_live_state_is_replayed_from_the_messages(tmp_path):
    live = live_of(call(tmp_path).timeline, 16000)
    assert live.text_of("agent") == ["Hello, your order?", "Your order shipped."]
    assert [c["name"] for c in live.tool_calls] == ["lookupOrder"] and live.agent_finals == 2


def test_the_record_policy():
    assert keeps_recording("all", "completed") and keeps_recording("all", "failed:expect")
    assert keeps_recording("failed", "failed:expect") and keeps_recording(
        "failed", "invalid:generator_overloaded"
    )
    assert not keeps_recording("failed", "completed") and not keeps_recording("none", "failed:expect")


@pytest.mark.parametrize(("policy", "kept"), [("all", True), ("none", False)])
async def test_analyse_call_writes_the_files_the_policy_keeps_and_drops_the_audio_file(
    tmp_path, policy, kept
):
    result = call(tmp_path)
    sink = BytesSink()
    async with UltravoxApi("http://127.0.0.1:9/api", "key") as api:  # never asked: no call id to read back
        record, metrics, _ = await analyse_call(result, scenario(), "local", api, sink, record=policy)
    assert record["outcome"] == metrics.outcome == "failed:expect"
    assert set(record["artifacts"]) == ({"timeline", "recording"} if kept else {"timeline"})
    assert set(sink.files) == ({".timeline.json", ".flac"} if kept else {".timeline.json"})
    assert not result.agent_audio_path.exists()  # used, then gone
    if kept:
        import io

        audio, rate = sf.read(io.BytesIO(sink.files[".flac"]), dtype="int16")
        assert rate == 16000
        greeting_at = 300 * 16  # 0.3 s after t0, at 16 kHz
        assert np.array_equal(audio[greeting_at : greeting_at + 320, 1], np.full(320, 1000, np.int16))
