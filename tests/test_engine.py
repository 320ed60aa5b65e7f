"""The call engine against the local server's faults: a fault ends one call with a reason, never a crash."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.outcomes import MEASURED
from uvbench.runner.run import Endpoint, run_call_of
from uvbench.scenario import parse_scenarios
from uvbench.server.process import ServerProcess


@pytest.fixture(scope="module")
def endpoint():
    # In a process of its own, as `uvbench run` starts it: the server's work (speech synthesis)
    # on the client's event loop would hold it up, and the figures would rightly be set apart.
    with ServerProcess({"agent": {"latency": {"kind": "fixed", "ms": 100}}}) as server:
        yield Endpoint(server.api_url, server.api_key, "local", True)


def figure(metrics, name: str):
    """A call figure, measured or set apart (on a busy machine the loop may be held up around the
    stamp it reads: the value is then kept apart, with its reason)."""
    if name in metrics.metrics:
        return metrics.metrics[name]
    return metrics.set_apart[name]["value"]


def scenario(body: str):
    (one,) = parse_scenarios(textwrap.dedent(body), source="test.yaml", base_dir=".")
    return one


async def test_malformed_and_unknown_messages_are_kept_and_the_call_goes_on(endpoint):
    one = scenario(
        """
        name: faults
        call:
          experimentalSettings: {uvbench: {faults: {malformed_messages: true, unknown_messages: true}}}
        script:
          - wait_for: agent_done
          - hang_up
        """
    )
    result, metrics, _, _ = await run_call_of(one, endpoint)
    assert metrics.outcome in MEASURED, metrics.outcome_detail
    invalid = result.timeline.of_kind("msg.in_invalid")
    assert invalid and invalid[0].data["text"] == "{this is not json"
    assert metrics.metrics["call.malformed_count"] == len(invalid) == 1  # counted in the record
    types = [e.data["message"]["type"] for e in result.timeline.of_kind("msg.in")]
    assert "uvbench_unknown_message" in types


async def test_a_dropped_socket_fails_the_call_with_a_reason(endpoint):
    one = scenario(
        """
        name: dropped
        call:
          experimentalSettings: {uvbench: {faults: {drop_socket_after_ms: 500}}}
        script:
          - silence: 5s
          - hang_up
        """
    )
    result, metrics, _, _ = await run_call_of(one, endpoint)
    assert metrics.outcome.startswith("failed:")
    closed = result.timeline.first("ws.closed")
    assert closed.data["by"] == "server" and closed.data["code"] == 1006
    assert result.call["endReason"] == "connection_error"


async def test_a_wait_that_times_out_stops_the_script_and_fails_the_call(endpoint):
    one = scenario(
        """
        name: waits
        call: {firstSpeakerSettings: {user: {}}}
        script:
          - wait_for: {transcript: "never said", role: agent}
            timeout: 1s
          - say: hello_16k.wav
        """
    )
    result, metrics, _, _ = await run_call_of(one, endpoint)
    assert metrics.outcome == "failed:error"
    (error,) = result.timeline.of_kind("error")
    assert error.data["reason"] == "wait_timeout"
    assert error.data["message"] == "timed out after 1 s waiting for a agent transcript matching 'never said'"
    assert not result.timeline.of_kind("utterance.queued")  # the script stopped there


async def test_tool_answers_errors_and_hang_up(endpoint):
    tools = [
        {"temporaryTool": {"modelToolName": "broken", "description": "x", "client": {}}},
        {"temporaryTool": {"modelToolName": "endCall", "description": "x", "client": {}}},
    ]
    calls = [{"turn": 1, "name": "broken"}, {"turn": 2, "name": "endCall"}]
    one = scenario(
        f"""
        name: tools
        call:
          firstSpeakerSettings: {{user: {{}}}}
          selectedTools: {json.dumps(tools)}
          experimentalSettings: {{uvbench: {{agent: {{tool_calls: {json.dumps(calls)}}}}}}}
        tools:
          broken: {{error: implementation-error, message: boom}}
          endCall: {{result: bye, response_type: hang-up}}
        script:
          - text: first
          - wait_for: agent_done
          - text: second
          - wait_for: {{silence: 10s}}
            timeout: 5s
        """
    )
    result, metrics, _, _ = await run_call_of(one, endpoint)
    sent = [
        e.data["message"]
        for e in result.timeline.of_kind("msg.out")
        if e.data["message"]["type"] == "client_tool_result"
    ]
    assert sent[0]["errorType"] == "implementation-error" and sent[0]["errorMessage"] == "boom"
    assert sent[1]["result"] == "bye" and sent[1]["responseType"] == "hang-up"
    agent = [t for t in result.messages if t["role"] == "MESSAGE_ROLE_AGENT"]
    assert agent[0]["text"] == "Sorry, I could not complete that."
    assert result.call["endReason"] == "agent_hangup"
    # The server hung up before the script ended: a failed call, with the reason.
    assert metrics.outcome.startswith("failed:")


async def test_a_client_that_cannot_keep_real_time_sets_apart_the_turns_it_was_late_for(endpoint):
    """The load generator checks itself: a blocked event loop makes the pacer late, and a turn whose
    anchor chunks (from its last speech sample to its reply) left later than half a chunk has its
    latencies set apart, never blamed on the agent; the rest of the call still counts."""
    import asyncio
    import time

    from uvbench.metrics.validity import TURN_FIGURES

    one = scenario(
        """
        name: overloaded
        script:
          - wait_for: agent_done
          - say: hello_16k.wav
          - wait_for: agent_done
          - say: yes_16k.wav
          - wait_for: agent_done
          - hang_up
        """
    )
    stop = asyncio.Event()

    async def hog() -> None:
        while not stop.is_set():
            end = time.perf_counter() + 0.05  # the loop is blocked 50 ms at a time
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0.01)

    hogging = asyncio.create_task(hog())
    try:
        _, metrics, _, _ = await run_call_of(one, endpoint)
    finally:
        stop.set()
        await hogging
    assert metrics.metrics["pacer.lateness_p99_ms"] > 10  # the whole call was once discarded for this
    assert len(metrics.turns) == 2
    set_apart = 0
    for turn in metrics.turns:
        late = turn["anchor_lateness_ms"]
        assert late is not None  # the stream carried every turn's anchor
        if late > 10 and not turn["missed"]:  # half a 20 ms chunk
            set_apart += 1
            assert turn["validity"] == "set_apart:anchor_late"
            assert {"turn.ttfb_ms", "turn.ttfa_ms"} <= set(turn["set_apart"]) <= set(TURN_FIGURES)
            assert all(e["reason"] == "anchor_late" for e in turn["set_apart"].values())
            assert all(turn["metrics"].get(name) is None for name in TURN_FIGURES)
        else:  # on time at its anchor, but its replies were stamped while the loop was held up
            assert all(e["reason"] == "loop_lag" for e in turn["set_apart"].values())
    assert set_apart >= 1  # a loop blocked 50 ms in every 60 makes the anchors late
    # The loop's lag was measured too: its 50 ms blocks, so nearly every stamp of the call is
    # suspect (one taken in a 10 ms gap between blocks is not, and stands).
    assert metrics.metrics["pacer.loop_lag_max_ms"] >= 40
    greeting = metrics.set_apart.get("call.first_audio_ms")
    assert greeting is None or greeting["reason"] == "loop_lag"
    if metrics.outcome != "completed":
        assert metrics.outcome == "invalid:generator_overloaded"
        assert (metrics.outcome_detail or "").startswith(("all 3 anchored items set apart", "pacer drift"))


def test_a_finished_call_leaves_no_reference_cycle(endpoint):
    """Pacing processes run without the automatic garbage collector (a full pass over a thousand
    calls holds every pacer up): a call's objects must be freed by reference counting alone. As a
    pacing process runs calls: on its event loop, with one API client for all of them."""
    import asyncio
    import collections
    import gc

    from uvbench.call.engine import run_call
    from uvbench.call.plan import plan_for
    from uvbench.call.rest import UltravoxApi
    from uvbench.call.script import ScriptRun, make_script
    from uvbench.eventloop import fast_event_loop_factory

    one = scenario(
        """
        name: cycles
        call:
          selectedTools: [{temporaryTool: {modelToolName: lookupOrder, description: x, client: {}}}]
          experimentalSettings: {uvbench: {agent: {tool_calls: [{turn: 1, name: lookupOrder}]}}}
        tools: {lookupOrder: {result: "ok", delay: 50ms}}
        script:
          - wait_for: agent_done
          - say: hello_16k.wav
          - wait_for: agent_audible
          - barge_in: yes_16k.wav
            after: 200ms
          - text: hi
          - wait_for: agent_done
          - hang_up
        """
    )

    async def calls() -> tuple[int, collections.Counter]:
        async with UltravoxApi(endpoint.api_url, endpoint.api_key) as api:
            gc.collect()
            gc.disable()
            try:
                result = await run_call(plan_for(one, endpoint), make_script(one, ScriptRun()), api=api)
                assert result.failure is None, result.failure
                del result
                gc.set_debug(gc.DEBUG_SAVEALL)
                found = gc.collect()
                return found, collections.Counter(type(o).__name__ for o in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()

    with asyncio.Runner(loop_factory=fast_event_loop_factory()) as runner:
        found, garbage = runner.run(calls())
    assert found == 0, garbage.most_common(12)


async def test_waiting_for_the_agent_to_finish_wakes_on_messages_not_on_every_frame(endpoint, monkeypatch):
    """The pacing process's CPU per call: a step waiting for `agent_done` re-checks when a message
    comes (state, transcript) and once more when the last audio is heard, not at every agent frame
    (the greeting here is about 60 frames of 20 ms)."""
    from uvbench.call.live import LiveState

    wakes = 0
    wait_change = LiveState.wait_change

    async def counted(self, deadline_ns):
        nonlocal wakes
        wakes += 1
        return await wait_change(self, deadline_ns)

    monkeypatch.setattr(LiveState, "wait_change", counted)
    one = scenario(
        """
        name: greeting
        call:
          medium: {serverWebSocket: {inputSampleRate: 16000, outputSampleRate: 16000, clientBufferSizeMs: 60}}
        script:
          - wait_for: agent_done
          - hang_up
        """
    )
    result, metrics, _, _ = await run_call_of(one, endpoint)
    assert metrics.outcome in MEASURED, metrics.outcome_detail
    frames = len(result.timeline.audio_in) // 4
    messages = len(result.timeline.raw_in) + len(result.timeline.of_kind("msg.in"))
    assert frames > 40
    assert wakes <= messages + 3, (wakes, messages, frames)


async def test_a_call_the_run_stops_keeps_what_it_measured_and_is_interrupted(endpoint):
    """Cancelled midway (Ctrl-C, SIGTERM, a graceful stop), a call ends at once, hands over what
    it measured, and its outcome says the run stopped it; the cancellation goes on."""
    import asyncio

    from uvbench.analysis.call import BytesSink, analyse_call
    from uvbench.call.engine import run_call
    from uvbench.call.plan import plan_for
    from uvbench.call.rest import UltravoxApi
    from uvbench.call.script import ScriptRun, make_script

    one = scenario(
        """
        name: long
        client: {record: none}
        script:
          - wait_for: agent_done
          - silence: 30s
          - hang_up
        """
    )
    api = UltravoxApi(endpoint.api_url, endpoint.api_key)
    handed = []
    try:
        plan = plan_for(one, endpoint)
        task = asyncio.create_task(
            run_call(plan, make_script(one, ScriptRun()), api=api, on_interrupted=handed.append)
        )
        await asyncio.sleep(6)  # into the 30 s of silence: greeted, not finished
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (result,) = handed
        assert result.timeline.first("call.interrupted") is not None
        assert result.timeline.first("ws.open") is not None  # it had joined: its start is measured
        record, metrics, _ = await analyse_call(result, one, endpoint.label, api, BytesSink())
    finally:
        await api.close()
    assert metrics.outcome == "interrupted"
    assert record["outcome_detail"] == "the run stopped while the call ran"
    assert figure(metrics, "call.create_ms") is not None
    assert figure(metrics, "call.first_audio_ms") is not None


async def test_a_stall_the_call_ends_in_is_an_underflow_to_the_end(endpoint):
    """The agent stalls mid-greeting and the user hangs up before any more audio comes: the
    listener heard silence mid-utterance from the dry buffer to the end, and the call says so."""
    one = scenario(
        """
        name: stalled
        call:
          experimentalSettings: {uvbench: {faults: {output_stalls: [{after_ms: 300, duration_ms: 10000}]}}}
        script:
          - silence: 3s
          - hang_up
        """
    )
    result, metrics, _, _ = await run_call_of(one, endpoint)
    figures = metrics.metrics
    assert figures["call.underflow_count"] >= 1
    closed = result.timeline.first("ws.closed").t_ns
    first_audio = result.timeline.first("ws.open").t_ns + figure(metrics, "call.first_audio_ms") * 1e6
    # Dry from a little after the 300 ms that played (plus the buffer) to the hang-up near 3 s.
    assert figures["call.underflow_ms"] >= (closed - first_audio) / 1e6 - 1000


async def test_named_steps_name_their_turns_barge_ins_and_checks_in_the_record(endpoint):
    one = scenario(
        """
        name: named
        call:
          experimentalSettings: {uvbench: {agent: {greeting: "Hello there, how are you doing today?",
            replies: ["Sure, that is fine. Let me tell you a long story about many things."]}}}
        script:
          - wait_for: agent_done
          - {say: hello_16k.wav, name: ask_order}
          - wait_for: agent_audible
          - {barge_in: yes_16k.wav, name: cut_in}
          - wait_for: agent_done
          - say: hello_16k.wav
          - wait_for: agent_done
          - {expect: [{transcript_contains: hello, role: agent}, {transcript_contains: zzz, role: agent}],
             name: greeted}
          - hang_up
        """
    )
    _, metrics, checks, record = await run_call_of(one, endpoint)
    assert [t["name"] for t in record["turns"]] == ["ask_order", None]
    assert [b["name"] for b in record["barge_ins"]] == ["cut_in"]
    assert [(c["step"], c["name"], c["ok"]) for c in record["expectations"]] == [
        (7, "greeted", True),
        (7, "greeted", False),
    ]
    assert [c.name for c in checks] == ["greeted", "greeted"]
    # All the agent audio heard, greeting included: more than the turns' share of it.
    heard = metrics.metrics["call.agent_audio_ms"]
    in_turns = sum(t["metrics"]["turn.agent_audio_ms"] for t in record["turns"])
    assert heard > in_turns + 1000, (heard, in_turns)
