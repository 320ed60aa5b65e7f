"""The local server reacts to a realistic caller as an agent would (issue 14), end to end over real
sockets: its VAD hears the room's noise (a loud room cuts the agent off, a quiet one does not) and its
endpointing runs on the audio as it arrives (a link that holds the end of speech delays the turn).

Each figure the client reports is held against the server's own ground truth of the same call.
"""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from uvbench.runner.run import Endpoint, run_call_of
from uvbench.scenario import parse_scenarios
from uvbench.server.process import ServerProcess

NS = 1_000_000_000
MS = 1_000_000
AGREE_NS = 12 * MS
"""How close a client stamp and the server's stamp of one message are (tests/test_call_accuracy.py)."""
FRAME_MS = 32
"""The server VAD's frame: its decisions fall on these boundaries."""
VAD_FRAME_SAMPLES = 16000 * FRAME_MS // 1000


@pytest.fixture(scope="module")
def server():
    with ServerProcess({"agent": {"latency": {"kind": "fixed", "ms": 100}}}) as process:
        yield process


def scenario(text: str):
    (one,) = parse_scenarios(textwrap.dedent(text), source="test.yaml", base_dir=".")
    return one


NOISY_ROOM = """
    name: room
    # An agent drops a reply it has not begun when it hears the caller (the greeting, here, if the
    # room is heard before its first byte): no clear, nothing to count. A second of speech before
    # it may stop lets the greeting begin first however late a busy machine starts either side.
    call: {vadSettings: {minimumInterruptionDuration: 1s}}
    caller: {noise: {file: pink.flac, snr_db: %(snr)s}}
    script:
      - silence: 5s          # the greeting plays over the room; nobody speaks
      - say: hello_16k.wav
      - silence: 2s
      - hang_up
"""


def calls(server, *texts: str):
    endpoint = Endpoint(server.api_url, server.api_key, "local", True)

    async def both():
        return await asyncio.gather(*(run_call_of(scenario(t), endpoint) for t in texts))

    return asyncio.run(both())


def test_a_loud_room_cuts_the_agent_off_and_a_quiet_one_does_not(server):
    # Speech sits near -22 dBFS: at SNR 0 the room is as loud as the caller, far over the VAD's
    # threshold (-47 dBFS); at SNR 40 it is at -62, under the VAD's floor.
    (loud_result, loud, _, _), (quiet_result, quiet, _, _) = calls(
        server, NOISY_ROOM % {"snr": 0}, NOISY_ROOM % {"snr": 40}
    )
    for result in (loud_result, quiet_result):
        assert result.failure is None and result.ground_truth is not None

    # Quiet: the greeting plays out, the turn is answered, nothing is cut for the room. (On a busy
    # machine the greeting may start late enough for the caller's speech to cut its end: that
    # clear is the caller's doing, from the scripted speech on, and not a false one.)
    assert quiet.metrics["call.false_barge_in_count"] == 0 and quiet.false_barge_ins == []
    (said,) = quiet_result.timeline.of_kind("utterance.queued")
    for clear in quiet_result.ground_truth["clears"]:
        assert clear["speech_start_sample"] >= said.data["speech_start_sample"] - VAD_FRAME_SAMPLES
    assert not quiet.turns[0]["missed"]

    # Loud: the server hears the room as a caller talking over its greeting and stops; the
    # client counts each of those clears as false (no scripted speech or message explains it).
    truth_clears = loud_result.ground_truth["clears"]
    assert truth_clears and all(c["cause"] == "barge_in" for c in truth_clears)
    assert loud.metrics["call.false_barge_in_count"] == len(truth_clears)
    greeting = loud_result.ground_truth["replies"][0]
    assert greeting["kind"] == "greeting" and greeting["interrupted"]
    # Each the client counted is one the server sent (its stamp is taken once the write returned,
    # so the client may read the clear a little before it: tests/test_call_accuracy.py's bound).
    for counted, sent in zip(loud.false_barge_ins, truth_clears, strict=True):
        assert abs(counted["clear_ns"] - sent["sent_ns"]) < AGREE_NS
    # The noise never stops, so the server never hears the caller end a turn: the turn is missed.
    assert loud.turns[0]["missed"] and loud.outcome == "failed:missed_turn"
    assert loud_result.ground_truth["turns"] == []


HELD_END = """
    name: held
    call: {firstSpeakerSettings: {user: {}}}
    %(network)s
    script:
      - say: hello_16k.wav
      - wait_for: agent_done
      - hang_up
"""


def test_the_servers_endpointing_runs_on_arrival_so_a_held_end_of_speech_delays_the_turn(server):
    ((clean_result, clean, _, _),) = calls(server, HELD_END % {"network": ""})
    assert clean_result.ground_truth is not None
    (clean_turn,) = clean.turns
    # Where the end of speech falls on the stream, to hold the link over it in the second call.
    t_se_stream_ms = (clean_turn["t_se_ns"] - clean.anchors["t0_ns"]) / MS
    hold_ms = 600
    network = (
        f"network: {{bursts: {{hold_ms: {hold_ms}, every_ms: 9000, phase_ms: {t_se_stream_ms - 100:.0f}}}}}"
    )
    ((result, held, _, _),) = calls(server, HELD_END % {"network": network})
    truth = result.ground_truth
    assert truth is not None
    (turn,) = held.turns
    (truth_turn,) = truth["turns"]
    figures = turn["metrics"] | {k: v["value"] for k, v in turn["set_apart"].items()}
    # The chunk holding the end of speech left when the window closed, 500 ms after t_se (less the
    # part of its 20 ms that came after t_se).
    assert 480 <= figures["turn.network_delay_ms"] <= hold_ms
    # The server's input clock saw the link stop: its audio fell as far behind real time.
    assert truth["input"]["max_deficit_ms"] >= 480 - FRAME_MS
    # Its VAD runs on the audio as it comes: it could not take the end of the turn before the
    # end of speech reached it. (The silence held behind it came in the same flush, so with a
    # hold longer than the endpoint delay the turn ends at the flush: endpointing counts the
    # stream's audio, not the wall clock, as the real service times turns on its input stream.)
    assert truth_turn["end_decided_ns"] >= turn["heard_by_ns"]
    assert truth_turn["end_decided_ns"] - turn["t_se_ns"] >= 480 * MS
    # The agent's latency measured from when it could have heard the end leaves the hold out: it
    # is in turn.ttfa_ms (from t_se), not in turn.ttfa_heard_ms (from the release).
    held_for_ms = (turn["heard_by_ns"] - turn["t_se_ns"]) / MS
    assert figures["turn.ttfa_ms"] - figures["turn.ttfa_heard_ms"] == pytest.approx(held_for_ms, abs=1e-6)
    # (The release counts from the chunk's deadline, which is up to a chunk after t_se.)
    assert 0 <= held_for_ms - figures["turn.network_delay_ms"] <= 20
