"""Validity per figure (uvbench.metrics.validity): the pure functions at their edges, then compute() on
hand-built timelines (a fake clock: no socket, no loop)."""

from __future__ import annotations

import pytest

from tests.test_metrics import Call, greeting, long_greeting_burst, ms, paced
from uvbench.call.timeline import Timeline
from uvbench.metrics.validity import (
    ANCHOR_WAIT_NS,
    Chunk,
    LoopLag,
    anchor_chunks,
    anchor_lateness_ns,
    barge_in_anchor_end,
    call_set_apart_detail,
    item_set_apart,
    set_apart_reasons,
    split,
    tolerance_ns,
    turn_anchor_end,
    validity_of,
)
from uvbench.report.rebuild import recompute_record

S = 1_000_000_000


def stream(n: int, late: dict[int, int] | None = None) -> list[Chunk]:
    """n chunks of 320 samples due every 20 ms from 20 ms; chunk k late by late[k] ns."""
    late = late or {}
    return [
        Chunk(ms(20 * (k + 1)), ms(20 * (k + 1)) + late.get(k, 0), 320 * k, 320 * (k + 1)) for k in range(n)
    ]


# -- the pure functions ----------------------------------------------------------------------------


def test_tolerance_is_half_a_chunk_in_ns() -> None:
    assert tolerance_ns(20) == 10_000_000
    assert tolerance_ns(10.5) == 5_250_000
    assert tolerance_ns(None) is None and tolerance_ns(0) is None


def test_the_chunk_holding_the_anchor_sample_at_chunk_boundaries() -> None:
    chunks = stream(10)
    # Sample 319 is the last of chunk 0; 320 the first of chunk 1. A window ending before every
    # later chunk's due time keeps the holding chunk alone, whatever its own due time.
    assert anchor_chunks(chunks, 319, window_end_ns=0) == [chunks[0]]
    assert anchor_chunks(chunks, 320, window_end_ns=0) == [chunks[1]]
    assert anchor_chunks(chunks, 0, window_end_ns=0) == [chunks[0]]
    assert anchor_chunks(chunks, 3199, window_end_ns=0) == [chunks[9]]
    assert anchor_chunks(chunks, 3200, window_end_ns=ms(1000)) == []  # the stream ended first
    assert anchor_chunks([], 0, window_end_ns=ms(1000)) == []


def test_later_chunks_count_while_due_before_the_window_end() -> None:
    chunks = stream(10)
    # Chunk 3 is due at 80 ms: a window ending at 80 ms leaves it out, one ending just after keeps it.
    assert anchor_chunks(chunks, 320, window_end_ns=ms(80)) == chunks[1:3]
    assert anchor_chunks(chunks, 320, window_end_ns=ms(80) + 1) == chunks[1:4]
    assert anchor_chunks(chunks, 320, window_end_ns=ms(10_000)) == chunks[1:]


def test_anchor_lateness_is_the_latest_chunk() -> None:
    chunks = stream(10, late={2: 4_000_000, 3: 12_000_000, 6: 30_000_000})
    assert anchor_lateness_ns(anchor_chunks(chunks, 640, window_end_ns=ms(80) + 1)) == 12_000_000
    assert anchor_lateness_ns(anchor_chunks(chunks, 640, window_end_ns=ms(80))) == 4_000_000
    assert anchor_lateness_ns(anchor_chunks(chunks, 0, window_end_ns=0)) == 0
    assert anchor_lateness_ns([]) is None


def test_turn_window_ends() -> None:
    t_se = 5 * S
    assert turn_anchor_end(t_se, first_audio_ns=t_se + ms(700), reply_window_end=t_se + 2 * S) == t_se + ms(
        700
    )
    # Missed: the next utterance's start, or t_se + 10 s, whichever is first.
    assert turn_anchor_end(t_se, None, reply_window_end=t_se + 2 * S) == t_se + 2 * S
    assert turn_anchor_end(t_se, None, reply_window_end=t_se + 12 * S) == t_se + ANCHOR_WAIT_NS
    assert turn_anchor_end(t_se, None, reply_window_end=None) == t_se + 10 * S


def test_barge_in_window_ends() -> None:
    t_bi = 5 * S
    assert barge_in_anchor_end(t_bi, response_ns=t_bi + 3 * S, silent_ns=t_bi + S, reply_window_end=None) == (
        t_bi + 3 * S
    )
    assert barge_in_anchor_end(t_bi, None, silent_ns=t_bi + S, reply_window_end=None) == t_bi + S
    # Silent at t_bi (nothing heard after it) is no end: the window runs to its bound.
    assert barge_in_anchor_end(t_bi, None, silent_ns=t_bi, reply_window_end=t_bi + 4 * S) == t_bi + 4 * S
    assert barge_in_anchor_end(t_bi, None, None, reply_window_end=None) == t_bi + 10 * S
    assert barge_in_anchor_end(t_bi, t_bi + 11 * S, None, reply_window_end=None) == t_bi + 10 * S
    assert barge_in_anchor_end(t_bi, t_bi + 3 * S, None, reply_window_end=t_bi + 2 * S) == t_bi + 2 * S


def test_lag_at_edges() -> None:
    loop = LoopLag.from_data({"period_ns": 100, "floor_ns": 50, "late": [[1000, 300]]})
    assert loop == LoopLag(100, 50, ((1000, 300),))
    # Uncertain from fire - lag - period (600) to fire + period (1100), by period + lag.
    assert [loop.lag_at(t) for t in (599, 600, 1000, 1100, 1101)] == [0, 400, 400, 400, 0]
    both = LoopLag(100, 50, ((1000, 300), (1150, 80)))  # the second covers 970..1250
    assert [both.lag_at(t) for t in (960, 970, 1100, 1101, 1250, 1251)] == [400, 400, 400, 180, 180, 0]
    assert both.max_lag_ns == 300
    assert LoopLag.from_data({"period_ns": 100, "floor_ns": 50, "late": []}).max_lag_ns == 0
    assert LoopLag.from_data({"floor_ns": 50}) is None  # no period: unreadable
    assert LoopLag.from_data({"period_ns": 100, "late": [[1, 2, 3], "x", [5, -1], [7, 9]]}) == LoopLag(
        100, 0, ((7, 9),)
    )


def test_reasons_split_and_verdicts() -> None:
    loop = LoopLag(10, 0, ((1000, 20),))  # stamps in 970..1010 are uncertain by 30
    stamps = {"a": (None, 1005), "b": (2000,), "c": (1010,)}
    assert set_apart_reasons(("a", "b", "c"), anchor_late=False, stamps=stamps, loop=loop, tolerance=30) == {}
    assert set_apart_reasons(("a", "b"), anchor_late=False, stamps=stamps, loop=loop, tolerance=29) == {
        "a": "loop_lag"
    }
    assert set_apart_reasons(("a", "b"), anchor_late=True, stamps=stamps, loop=loop, tolerance=29) == {
        "a": "anchor_late",  # anchor_late wins
        "b": "anchor_late",
    }
    assert set_apart_reasons(("a",), anchor_late=True, stamps=stamps, loop=loop, tolerance=None) == {}
    kept, apart = split({"a": 1.5, "b": None, "c": 2.0}, {"a": "loop_lag", "b": "loop_lag"})
    assert kept == {"b": None, "c": 2.0}  # an unmeasured figure has nothing to set apart
    assert apart == {"a": {"value": 1.5, "reason": "loop_lag"}}
    assert validity_of(apart) == "set_apart:loop_lag"
    assert validity_of({}) == "valid"
    both = {"a": {"value": 1, "reason": "loop_lag"}, "c": {"value": 2, "reason": "anchor_late"}}
    assert validity_of(both) == "set_apart:anchor_late"
    assert item_set_apart(kept, apart, ("a", "c")) is None  # c stands
    assert item_set_apart({"b": None}, both, ("a", "b", "c")) == "anchor_late"
    assert item_set_apart({"b": None}, {}, ("b",)) is None
    assert call_set_apart_detail([]) is None
    assert call_set_apart_detail(["anchor_late", None]) is None
    assert call_set_apart_detail(["anchor_late", "loop_lag", "anchor_late"]) == (
        "all 3 anchored items set apart: anchor_late 2, loop_lag 1"
    )


# -- compute() on synthetic timelines --------------------------------------------------------------


def answer(call: Call, t: float, n: int = 5) -> None:
    """The agent's reply: speaking at t - 10, n frames from t, thinking at t - 100."""
    call.state(t - 100, "thinking")
    call.state(t - 10, "speaking")
    call.frames(t, n)
    call.agent(t + 100, final=True)
    call.state(t + 101, "listening")


def two_turns(call: Call) -> None:
    """Turn 0: speech at stream 1000-2000 ms (t_se 2100), reply from 2400 (chunks 99 to 113 carry
    its anchor); turn 1: speech at 3000-4000 ms (t_se 4100), reply from 4400 (chunks 199 to 213)."""
    call.utterance("say", (1000, 2000), step=1)
    answer(call, 2400)
    call.utterance("say", (3000, 4000), step=2)
    answer(call, 4400)


def loop_lag(call: Call, *late: tuple[float, float], period_ms: float = 10) -> None:
    call.event(
        5000, "loop.lag", period_ns=ms(period_ms), floor_ns=ms(1), late=[[ms(f), ms(g)] for f, g in late]
    )


TTFA_0 = 300.0


def test_a_late_stretch_during_the_greeting_or_a_silence_sets_nothing_apart() -> None:
    call = Call()
    greeting(call)
    two_turns(call)
    # 50 ms late through the greeting (chunks 0-15), during turn 0's speech before its last chunk
    # (80-95), and in the silences after each reply started (120-190, 220-240).
    late = {k: 50.0 for k in [*range(16), *range(80, 96), *range(120, 191), *range(220, 241)]}
    paced(call, late, n=250)
    m = call.compute()
    assert m.metrics["pacer.lateness_p99_ms"] == 50.0  # the old rule discarded the whole call
    assert m.outcome == "completed"
    assert m.set_apart == {}
    for turn in m.turns:
        assert (turn["validity"], turn["set_apart"], turn["anchor_lateness_ms"]) == ("valid", {}, 0.0)
        assert turn["metrics"]["turn.ttfa_ms"] == TTFA_0


def test_a_late_chunk_right_after_t_se_sets_apart_exactly_that_turn() -> None:
    call = Call()
    greeting(call)
    two_turns(call)
    paced(call, {100: 15.0}, n=250)  # chunk 100 (stream 2000-2020 ms) follows turn 0's last speech
    m = call.compute()
    first, second = m.turns
    assert first["anchor_lateness_ms"] == 15.0
    assert first["validity"] == "set_apart:anchor_late"
    assert first["set_apart"] == {
        "turn.ttfb_ms": {"value": 300.0, "reason": "anchor_late"},
        "turn.ttfa_ms": {"value": 300.0, "reason": "anchor_late"},
        "turn.thinking_ms": {"value": 200.0, "reason": "anchor_late"},
        "turn.agent_transcript_ms": {"value": 400.0, "reason": "anchor_late"},
        "turn.talk_over_ms": {"value": 0.0, "reason": "anchor_late"},
    }
    assert first["metrics"] == {
        "turn.user_transcript_ms": None,
        "turn.agent_audio_ms": 100.0,  # playback figures are never set apart
        "turn.underflow_count": 0,
        "turn.underflow_ms": 0.0,
        "turn.network_delay_ms": None,
        "turn.ttfa_heard_ms": None,
    }
    assert (second["validity"], second["set_apart"], second["anchor_lateness_ms"]) == ("valid", {}, 0.0)
    assert second["metrics"]["turn.ttfa_ms"] == 300.0
    assert m.outcome == "completed"  # the other turn and the greeting stand


def test_a_late_chunk_after_the_reply_started_sets_nothing_apart() -> None:
    call = Call()
    greeting(call)
    two_turns(call)
    # Chunk 113 is due at 2380, before the reply's first frame (2400): the last carrying the anchor.
    paced(call, {114: 40.0, 115: 40.0, 113: 10.0}, n=250)
    m = call.compute()
    assert m.turns[0]["anchor_window_end_ns"] == ms(2400)
    assert m.turns[0]["anchor_lateness_ms"] == 10.0
    assert [t["validity"] for t in m.turns] == ["valid", "valid"]
    assert m.outcome == "completed"


def test_a_missed_turn_looks_ten_seconds_ahead_at_most() -> None:
    call = Call()
    call.utterance("say", (1000, 2000))  # never answered; t_se 2100
    paced(call, {599: 30.0, 600: 40.0}, n=700)  # chunk 599 is due at 12100 ms, chunk 600 at 12120
    m = call.compute()
    turn = m.turns[0]
    assert turn["anchor_window_end_ns"] == ms(12100)
    assert turn["anchor_lateness_ms"] == 0.0  # due at the window's end is outside it
    assert m.outcome == "failed:missed_turn"


def test_loop_lag_around_a_replys_first_frame_sets_apart_ttfb_and_ttfa_of_that_turn_only() -> None:
    call = Call()
    greeting(call)
    two_turns(call)
    paced(call, n=250)
    loop_lag(call, (2405, 20))  # stamps in 2375..2415 uncertain by 30 ms: turn 0's first frames
    m = call.compute()
    first, second = m.turns
    assert first["validity"] == "set_apart:loop_lag"
    assert first["set_apart"] == {
        "turn.ttfb_ms": {"value": 300.0, "reason": "loop_lag"},
        "turn.ttfa_ms": {"value": 300.0, "reason": "loop_lag"},
    }
    assert first["metrics"]["turn.thinking_ms"] == 200.0  # at 2300: before the lag
    assert first["metrics"]["turn.agent_transcript_ms"] == 400.0
    assert first["anchor_lateness_ms"] == 0.0
    assert (second["validity"], second["set_apart"]) == ("valid", {})
    assert m.metrics["pacer.loop_lag_max_ms"] == 20.0
    assert m.set_apart == {}
    assert m.outcome == "completed"


def test_loop_lag_at_the_socket_open_sets_apart_the_call_figures_stamped_then() -> None:
    call = Call()
    greeting(call)  # the call's only anchored item: heard from 160 ms, first frame at 150
    loop_lag(call, (105, 15), period_ms=5)  # 85..110: ws.open (100), not created (80) nor 112
    m = call.compute()
    assert m.set_apart == {
        "call.join_ms": {"value": 10.0, "reason": "loop_lag"},
        "call.started_ms": {"value": 12.0, "reason": "loop_lag"},
        "call.first_audio_ms": {"value": 60.0, "reason": "loop_lag"},
    }
    assert m.metrics["call.create_ms"] == 30.0
    assert "call.join_ms" not in m.metrics and "call.first_audio_ms" not in m.metrics
    assert m.metrics["call.max_buffered_ms"] == 20.0  # playback figures stand
    assert m.outcome == "invalid:generator_overloaded"
    assert m.outcome_detail == "all 1 anchored items set apart: loop_lag 1"
    assert m.to_json()["set_apart"] == m.set_apart


def test_a_call_whose_every_anchored_item_is_set_apart_is_invalid() -> None:
    call = Call()
    greeting(call)
    two_turns(call)
    paced(call, {100: 15.0, 200: 11.0}, n=250)
    loop_lag(call, (150, 6), period_ms=5)  # uncertain by 11 ms at the greeting's first frame
    m = call.compute()
    assert [t["validity"] for t in m.turns] == ["set_apart:anchor_late", "set_apart:anchor_late"]
    assert [t["anchor_lateness_ms"] for t in m.turns] == [15.0, 11.0]
    assert m.outcome == "invalid:generator_overloaded"
    assert m.metrics["call.outcome"] == "invalid:generator_overloaded"
    assert m.outcome_detail == "all 3 anchored items set apart: anchor_late 2, loop_lag 1"


def test_a_socket_the_server_dropped_stays_a_failure_however_late_the_client_was() -> None:
    call = Call()
    greeting(call)
    loop_lag(call, (105, 15), period_ms=5)  # the only anchored item set apart, as above
    call.close(3000, code=1011)
    m = call.compute()
    assert m.outcome == "failed:server_close"
    assert "call.first_audio_ms" in m.set_apart  # still set apart, and still counted as such


def test_without_a_greeting_the_first_audio_is_a_reply_not_an_item() -> None:
    call = Call()
    two_turns(call)
    paced(call, {100: 15.0}, n=250)
    assert call.compute().outcome == "completed"  # turn 1 stands
    call = Call()
    two_turns(call)
    paced(call, {100: 15.0, 200: 15.0}, n=250)
    m = call.compute()
    assert m.metrics["call.first_audio_ms"] == 2300.0  # turn 0's reply, not counted as a greeting
    assert m.outcome_detail == "all 2 anchored items set apart: anchor_late 2"


def test_drift_still_invalidates() -> None:
    call = Call()
    greeting(call)
    two_turns(call)
    paced(call, n=250, drift_ms=25)
    m = call.compute()
    assert [t["validity"] for t in m.turns] == ["valid", "valid"]
    assert m.outcome == "invalid:generator_overloaded"
    assert m.outcome_detail == "pacer drift 25.000 ms > one chunk"


def barge_in_call() -> Call:
    """A barge-in at stream 1400 ms (t_bi 1500, chunk 70 holds its first sample), a clear at 1800
    and the response's first frame at 2900 (heard from 2902)."""
    call = Call(client_buffer_ms=30000)
    long_greeting_burst(call)
    call.utterance("barge_in", (1400, 2400), step=3)
    call.clear(1800)
    call.state(1801, "listening")
    call.agent(1802, final=True)
    call.state(2890, "speaking")
    call.frames(2900, 5, first=32)
    call.agent(3000, final=True)
    call.close(3500)
    return call


def test_a_barge_in_with_a_late_anchor_is_set_apart_whole() -> None:
    call = barge_in_call()
    paced(call, {69: 50.0, 70: 12.0, 139: 11.0, 140: 40.0}, n=200)  # 139 is due at 2900, 140 at 2920
    m = call.compute()
    (b,) = m.barge_ins
    assert b["anchor_window_end_ns"] == ms(2902)  # the response heard
    assert b["anchor_lateness_ms"] == 12.0
    assert b["validity"] == "set_apart:anchor_late"
    assert b["metrics"] == {}
    assert b["set_apart"] == {
        name: {"value": value, "reason": "anchor_late"}
        for name, value in {
            "interrupt.clear_ms": 300.0,
            "interrupt.last_audio_ms": -401.0,
            "interrupt.silence_ms": 300.0,
            "interrupt.talk_over_ms": 300.0,
            "interrupt.response_ms": 402.0,
        }.items()
    }
    assert b["success"] is True  # the verdict stands
    assert m.metrics["interrupt.success_pct"] == 100.0
    assert m.outcome == "completed"  # the greeting stands


def test_loop_lag_at_a_clear_sets_apart_the_barge_in_figures_it_ends() -> None:
    call = barge_in_call()
    paced(call, n=200)
    loop_lag(call, (1800, 20))  # 1770..1810
    m = call.compute()
    (b,) = m.barge_ins
    assert b["anchor_lateness_ms"] == 0.0
    assert b["set_apart"] == {
        "interrupt.clear_ms": {"value": 300.0, "reason": "loop_lag"},
        "interrupt.silence_ms": {"value": 300.0, "reason": "loop_lag"},  # the clear cut the audio
    }
    assert b["metrics"] == {
        "interrupt.last_audio_ms": -401.0,
        "interrupt.talk_over_ms": 300.0,
        "interrupt.response_ms": 402.0,
    }
    assert b["validity"] == "set_apart:loop_lag"


def test_an_old_timeline_without_loop_lag_rebuilds_with_no_loop_lag_set_aparts() -> None:
    call = Call()
    greeting(call)
    two_turns(call)
    paced(call, {100: 15.0}, n=250)
    loop_lag(call, (2405, 20), (4405, 20), (150, 20))
    call.compute()  # sorts the events
    with_lag = call.tl.to_json()
    old = dict(with_lag, events=[e for e in with_lag["events"] if e[1] != "loop.lag"])
    stored = {"scenario": "s", "metrics": {"call.outcome": "invalid:generator_overloaded"}, "turns": []}
    record = recompute_record(stored, Timeline.from_json(old))
    assert record["metrics"]["pacer.loop_lag_max_ms"] is None
    assert record["set_apart"] == {}
    assert [t["validity"] for t in record["turns"]] == ["set_apart:anchor_late", "valid"]
    assert record["turns"][1]["metrics"]["turn.ttfa_ms"] == 300.0
    assert record["outcome"] == "completed" and record["passed"] is True
    # The same timeline with its loop.lag: turn 1's first frame and the greeting are set apart too.
    again = recompute_record(stored, Timeline.from_json(with_lag))
    assert again["turns"][1]["validity"] == "set_apart:loop_lag"
    assert set(again["set_apart"]) == {"call.first_audio_ms"}
    assert again["outcome"] == "completed"  # turn 1's thinking and transcript figures still stand


@pytest.mark.parametrize("late_ms", [9.999, 10.0])
def test_within_the_tolerance_nothing_is_set_apart(late_ms: float) -> None:
    call = Call()
    greeting(call)
    two_turns(call)
    paced(call, {100: late_ms, 200: late_ms}, n=250)
    loop_lag(call, (2405, 0), period_ms=10)  # uncertain by 10 ms: exactly the tolerance
    m = call.compute()
    assert [t["validity"] for t in m.turns] == ["valid", "valid"]
    assert m.metrics["pacer.loop_lag_max_ms"] == 0.0


# -- expectations ----------------------------------------------------------------------------------


def test_a_bound_on_a_set_apart_figure_is_not_judged() -> None:
    from uvbench.call.expect import check
    from uvbench.scenario import MetricBound

    call = Call()
    greeting(call)
    two_turns(call)
    paced(call, {100: 15.0}, n=250)  # turn 0 set apart (anchor_late)
    loop_lag(call, (105, 15), period_ms=5)  # ws.open: call.join_ms set apart (loop_lag)
    m = call.compute()

    def judged(**bound: object) -> tuple[bool, str]:
        checked = check(4, MetricBound.model_validate(bound), None, m)  # type: ignore[arg-type]
        return checked.ok, checked.detail

    assert judged(metric="turn.ttfa_ms", turn=0, **{"<": 100}) == (
        True,
        "not judged: set apart (anchor_late)",
    )
    assert judged(metric="turn.ttfa_ms", **{"<": 200}) == (
        False,
        "got 300.0; 1 not judged: set apart (anchor_late)",
    )
    assert judged(metric="turn.ttfa_ms", turn=1, **{"<": 1000}) == (True, "got 300.0")
    assert judged(metric="call.join_ms", **{"<": 1}) == (True, "not judged: set apart (loop_lag)")
    # A figure that was not measured fails as before, set apart or not elsewhere.
    assert judged(metric="turn.user_transcript_ms", turn=1, **{"<": 1000}) == (False, "no value: got [None]")
    assert judged(metric="turn.user_transcript_ms", **{"<": 1000}) == (False, "no value: got [None, None]")


# -- the quick forms compute() uses answer as the plain ones -----------------------------------------


def test_the_indexed_loop_lag_answers_as_the_loop_lag() -> None:
    import random

    from uvbench.metrics.validity import LagIndex

    rng = random.Random(5)
    for _ in range(200):
        late = [[rng.randint(0, 2 * S), rng.randint(0, 50_000_000)] for _ in range(rng.randint(0, 30))]
        loop = LoopLag.from_data({"period_ns": rng.choice([0, 2_000_000, 10_000_000]), "late": late})
        assert loop is not None
        index = LagIndex(loop)
        for t in [rng.randint(-S, 3 * S) for _ in range(50)] + [fire for fire, _ in loop.late]:
            assert index.lag_at(t) == loop.lag_at(t)


def test_the_chunk_columns_answer_as_anchor_chunks() -> None:
    import random
    from array import array

    from uvbench.metrics.call import _Chunks

    rng = random.Random(6)
    for _ in range(200):
        chunks = stream(rng.randint(0, 60), {k: rng.randint(0, 40_000_000) for k in range(0, 60, 7)})
        if chunks and rng.random() < 0.3:  # out of stream order, and a repeated start: a stable sort
            i, j = rng.randrange(len(chunks)), rng.randrange(len(chunks))
            chunks[i], chunks[j] = chunks[j], chunks[i]
            chunks.append(chunks[0]._replace(sent_ns=chunks[0].sent_ns + 1))
        columns = _Chunks(array("q", [v for c in chunks for v in c]))
        ordered = sorted(chunks, key=lambda c: c.start_sample)
        for _ in range(30):
            sample, end = rng.randint(-100, 320 * 62), rng.randint(0, ms(1300))
            expected = anchor_lateness_ns(anchor_chunks(ordered, sample, end))
            assert columns.anchor_lateness(sample, end) == expected
        assert sorted(columns.late) == sorted(c.sent_ns - c.due_ns for c in chunks)
