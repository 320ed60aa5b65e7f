"""The simulated listener: exact hand-computed cases and properties over random frame sequences."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvbench.listener import ClearEffect, Listener, ListenerConfig, Playback, Underflow

MS = 1_000_000
NS = 1_000_000_000
RATE = 16000
FRAME = 320  # 20 ms at 16 kHz


def play(events: list[tuple], config: ListenerConfig | None = None, finish: int | None = None) -> Playback:
    """Feed ("audio", t, samples[, first, last]) / ("clear", t) / ("end", t); finish at the last t."""
    listener = Listener(config or ListenerConfig(sample_rate=RATE))
    t_last = 0
    for event in events:
        kind, t = event[0], event[1]
        t_last = t
        if kind == "audio":
            samples = event[2]
            first, last = (event[3], event[4]) if len(event) > 3 else (0, samples - 1)
            listener.on_audio(t, samples, first, last)
        elif kind == "clear":
            listener.on_clear(t)
        else:
            listener.on_utterance_end(t)
    return listener.finish(finish if finish is not None else t_last)


def realtime(n: int, start: int = 0, step: int = 20 * MS) -> list[tuple]:
    return [("audio", start + k * step, FRAME) for k in range(n)]


# -- hand-computed cases -----------------------------------------------------------------------


def test_continuous_audio_plays_on_arrival_without_underflow() -> None:
    pb = play(realtime(5) + [("end", 100 * MS)])
    assert pb.play_start_ns == [0, 20 * MS, 40 * MS, 60 * MS, 80 * MS]
    assert pb.played_samples == [FRAME] * 5
    assert pb.underflows == []
    assert pb.end_ns == 100 * MS  # last arrival + its duration
    assert pb.audible == [(0, 100 * MS)]
    assert pb.playing == [(0, 100 * MS)]
    assert pb.max_buffered_ms == 20.0
    assert pb.frame_end_ns[4] == 100 * MS


def test_playback_end_is_arrival_plus_duration_for_a_late_frame() -> None:
    pb = play([("audio", 7 * MS, 480)], ListenerConfig(sample_rate=24000))
    assert pb.play_start_ns == [7 * MS]
    assert pb.end_ns == 27 * MS


def test_gap_mid_utterance_is_one_underflow_of_the_gap() -> None:
    # Frames at 0 and 20 ms play until 40 ms; the next arrives at 65 ms.
    pb = play(realtime(2) + [("audio", 65 * MS, FRAME), ("end", 90 * MS)])
    assert pb.underflows == [Underflow(40 * MS, 65 * MS)]
    assert pb.underflows[0].ms == 25.0
    assert pb.underflow_ms == 25.0
    assert pb.play_start_ns[2] == 65 * MS
    assert pb.audible == [(0, 40 * MS), (65 * MS, 85 * MS)]


def test_gap_after_an_utterance_end_is_no_underflow() -> None:
    # The end arrives while the second frame still plays, and after the buffer ran dry.
    for end_at in (30 * MS, 50 * MS):
        pb = play(realtime(2) + [("end", end_at), ("audio", 200 * MS, FRAME)])
        assert pb.underflows == []
        assert pb.play_start_ns[2] == 200 * MS


def test_a_clear_between_frames_ends_the_utterance_too() -> None:
    pb = play(realtime(2) + [("clear", 50 * MS), ("audio", 80 * MS, FRAME)])
    assert pb.underflows == []
    assert pb.clears == [ClearEffect(50 * MS, 0, 50 * MS, honoured=True)]


def test_an_underflow_still_open_when_the_call_ends_runs_to_the_end() -> None:
    """Two frames, then nothing until the call ends, the agent never done: the listener heard
    silence mid-utterance from 40 ms to the end (a stalled agent the call gave up on)."""
    pb = play(realtime(2), finish=500 * MS)
    assert pb.underflows == [Underflow(40 * MS, 500 * MS, open_at_end=True)]
    assert pb.underflow_ms == 460.0
    assert pb.end_ns == 500 * MS
    done = play([*realtime(2), ("end", 60 * MS)], finish=500 * MS)  # the utterance ended first
    assert done.underflows == []


def burst(n: int, t: int = 0) -> list[tuple]:
    return [("audio", t, FRAME) for _ in range(n)]


def test_clear_honoured_drops_unplayed_audio_at_its_arrival() -> None:
    # 10 frames (200 ms) arrive at once; the clear comes 50 ms in: 800 samples started playing.
    pb = play(burst(10) + [("clear", 50 * MS)])
    assert pb.clears == [ClearEffect(50 * MS, 2400, 50 * MS, honoured=True)]
    assert pb.played_samples == [320, 320, 160] + [0] * 7
    assert pb.play_start_ns[:3] == [0, 20 * MS, 40 * MS]
    assert pb.play_start_ns[3:] == [None] * 7
    assert pb.audible == [(0, 50 * MS)]
    assert pb.samples_dropped == 2400
    assert pb.heard_at(2, 159) == 40 * MS + 159 * NS // RATE
    assert pb.heard_at(2, 160) is None
    assert pb.frame_end_ns[2] == 50 * MS


def test_clear_cuts_the_sample_playing_at_its_arrival() -> None:
    # At 16 kHz a sample lasts 62.5 us: a clear at 62.6 us lets 2 samples start, the second is cut.
    pb = play([("audio", 0, FRAME), ("clear", 62_600)])
    assert pb.played_samples == [2]
    assert pb.clears[0].dropped_samples == FRAME - 2
    assert pb.audible == [(0, 62_600)]


def test_clear_ignored_keeps_playing_until_the_buffer_drains() -> None:
    config = ListenerConfig(sample_rate=RATE, honor_clear=False)
    pb = play(burst(10) + [("clear", 50 * MS)], config)
    assert pb.clears == [ClearEffect(50 * MS, 0, 200 * MS, honoured=False)]
    assert pb.played_samples == [FRAME] * 10
    assert pb.audible == [(0, 200 * MS)]
    assert pb.end_ns == 200 * MS


def test_clear_when_nothing_plays_is_silent_at_once() -> None:
    for honour in (True, False):
        pb = play(realtime(1) + [("clear", 70 * MS)], ListenerConfig(sample_rate=RATE, honor_clear=honour))
        assert pb.clears[0].silent_at_ns == 70 * MS
        assert pb.clears[0].dropped_samples == 0


def test_prebuffer_delays_the_start_until_enough_is_buffered() -> None:
    config = ListenerConfig(sample_rate=RATE, prebuffer_ms=100)
    pb = play(realtime(8), config)
    # 100 ms = 1600 samples are buffered when the fifth frame arrives at 80 ms.
    assert pb.play_start_ns[:5] == [80 * MS, 100 * MS, 120 * MS, 140 * MS, 160 * MS]
    assert pb.play_start_ns[5:] == [180 * MS, 200 * MS, 220 * MS]
    assert pb.underflows == []
    assert pb.max_buffered_ms == 100.0
    assert pb.first_audible_at_or_after(0) == 80 * MS


def test_prebuffer_released_by_the_utterance_end() -> None:
    config = ListenerConfig(sample_rate=RATE, prebuffer_ms=100)
    pb = play(realtime(2) + [("end", 30 * MS)], config)
    assert pb.play_start_ns == [30 * MS, 50 * MS]
    assert pb.end_ns == 70 * MS


def test_prebuffer_released_by_finish_and_dropped_by_a_clear() -> None:
    config = ListenerConfig(sample_rate=RATE, prebuffer_ms=100)
    assert play(realtime(2), config, finish=25 * MS).play_start_ns == [25 * MS, 45 * MS]
    pb = play(realtime(2) + [("clear", 30 * MS)], config)
    assert pb.play_start_ns == [None, None]
    assert pb.clears == [ClearEffect(30 * MS, 640, 30 * MS, honoured=True)]


def test_prebuffer_applies_to_an_utterance_start_only() -> None:
    config = ListenerConfig(sample_rate=RATE, prebuffer_ms=40)
    # Start held until 40 ms are buffered (20 ms); then an underflow at 60 ms resumes at once.
    pb = play(realtime(2) + [("audio", 100 * MS, FRAME)], config)
    assert pb.play_start_ns == [20 * MS, 40 * MS, 100 * MS]
    assert pb.underflows == [Underflow(60 * MS, 100 * MS)]
    # After an utterance end, the next utterance is held back again.
    pb = play(
        realtime(2) + [("end", 61 * MS), ("audio", 100 * MS, FRAME), ("audio", 120 * MS, FRAME)], config
    )
    assert pb.play_start_ns[2:] == [120 * MS, 140 * MS]


def test_max_buffered_with_a_30000_ms_burst() -> None:
    # 30 s of audio arrives 1 us a frame; at the last arrival (1.499 ms) 24 samples have started.
    events = [("audio", k * 1000, FRAME) for k in range(1500)]
    config = ListenerConfig(sample_rate=RATE, client_buffer_ms=30000)
    pb = play(events, config)
    assert pb.max_buffered_samples == 1500 * FRAME - 24
    assert pb.max_buffered_ms == 29998.5
    assert pb.overrun_ms == 0.0
    assert pb.end_ns == 30 * NS
    assert pb.underflows == []
    assert ListenerConfig(sample_rate=RATE).client_buffer_ms is None
    assert play(events).overrun_ms is None
    assert play(events, ListenerConfig(sample_rate=RATE, client_buffer_ms=60)).overrun_ms == 29938.5


def test_audible_uses_first_and_last_non_silent_samples() -> None:
    # Frame 0: audible samples 160..319; frame 1 silent; frame 2 audible 0..159.
    events = [
        ("audio", 0, FRAME, 160, 319),
        ("audio", 20 * MS, FRAME, -1, -1),
        ("audio", 40 * MS, FRAME, 0, 159),
    ]
    pb = play(events)
    assert pb.audible == [(10 * MS, 20 * MS), (40 * MS, 50 * MS)]
    assert pb.frame_audible == [(10 * MS, 20 * MS), None, (40 * MS, 50 * MS)]
    assert pb.first_audible_at_or_after(0) == 10 * MS
    assert pb.first_audible_at_or_after(15 * MS) == 15 * MS
    assert pb.first_audible_at_or_after(20 * MS) == 40 * MS
    assert pb.first_audible_at_or_after(50 * MS) is None
    assert pb.last_audible_before(30 * MS) == 20 * MS
    assert pb.last_audible_before(45 * MS) == 45 * MS
    assert pb.last_audible_before(10 * MS) is None
    assert pb.audible_ns_between(0, 45 * MS) == 15 * MS
    assert pb.audible_ns_between(15 * MS) == 15 * MS


def test_sample_times_are_exact_at_rates_that_do_not_divide_a_second() -> None:
    pb = play([("audio", 0, 441), ("audio", 1, 441)], ListenerConfig(sample_rate=44100))
    # One run from 0: sample k of the run starts at floor(k * 1e9 / 44100).
    assert pb.play_start_ns == [0, 10 * MS]
    assert pb.heard_at(1, 1) == 442 * NS // 44100
    assert pb.end_ns == 20 * MS


def test_events_out_of_order_are_refused() -> None:
    listener = Listener(ListenerConfig(sample_rate=RATE))
    listener.on_audio(10, FRAME, 0, 319)
    with pytest.raises(AssertionError):
        listener.on_clear(5)


def test_an_empty_frame_neither_plays_nor_ends_an_underflow() -> None:
    pb = play(realtime(1) + [("audio", 30 * MS, 0, -1, -1), ("audio", 50 * MS, FRAME)])
    assert pb.play_start_ns == [0, None, 50 * MS]
    assert pb.underflows == [Underflow(20 * MS, 50 * MS)]


# -- properties -----------------------------------------------------------------------------------


@st.composite
def sequences(draw: st.DrawFn, clears: bool = True, rates: tuple[int, ...] = (8000, 16000, 24000, 44100)):
    rate = draw(st.sampled_from(rates))
    events: list[tuple] = []
    t = draw(st.integers(0, 10 * MS))
    for _ in range(draw(st.integers(1, 40))):
        t += draw(st.sampled_from([0, 0, 1, 7 * MS, 20 * MS, 20 * MS, 25 * MS, 90 * MS]))
        kind = draw(st.sampled_from(["audio"] * 6 + ["end"] + (["clear"] if clears else [])))
        if kind == "audio":
            samples = draw(st.integers(1, 2 * rate // 50))
            if draw(st.booleans()):
                first = draw(st.integers(0, samples - 1))
                last = draw(st.integers(first, samples - 1))
            else:
                first = last = -1
            events.append(("audio", t, samples, first, last))
        else:
            events.append((kind, t))
    return rate, events


def configs(rate: int, draw_honour: bool, prebuffer: float) -> ListenerConfig:
    return ListenerConfig(sample_rate=rate, honor_clear=draw_honour, prebuffer_ms=prebuffer)


prebuffers = st.sampled_from([0.0, 0.0, 10.0, 60.0, 250.0])


@settings(max_examples=300, deadline=None)
@given(sequences(), st.booleans(), prebuffers)
def test_every_sample_is_played_or_dropped(seq, honour, prebuffer) -> None:
    rate, events = seq
    pb = play(events, configs(rate, honour, prebuffer))
    received = sum(e[2] for e in events if e[0] == "audio")
    assert pb.samples_received == received
    assert pb.samples_played + sum(c.dropped_samples for c in pb.clears) == received
    if not honour:
        assert pb.samples_played == received


@settings(max_examples=300, deadline=None)
@given(sequences(), st.booleans(), prebuffers)
def test_playback_never_overlaps_and_never_starts_before_arrival(seq, honour, prebuffer) -> None:
    rate, events = seq
    pb = play(events, configs(rate, honour, prebuffer))
    previous_end = None
    for i, start in enumerate(pb.play_start_ns):
        if start is None:
            assert pb.played_samples[i] == 0
            continue
        assert start >= pb.arrival_ns[i]
        end = pb.frame_end_ns[i]
        assert end is not None and end > start
        assert pb.heard_at(i, 0) == start
        if previous_end is not None:
            assert start >= previous_end
        previous_end = end
    for (a, b), (c, _) in zip(pb.playing, pb.playing[1:], strict=False):
        assert a < b < c
    for (a, b), (c, _) in zip(pb.audible, pb.audible[1:], strict=False):
        assert a < b < c
    for a, b in pb.audible:
        assert any(p <= a and b <= q for p, q in pb.playing)


@settings(max_examples=300, deadline=None)
@given(sequences(), st.booleans(), prebuffers)
def test_underflows_are_disjoint_and_lie_between_frames(seq, honour, prebuffer) -> None:
    rate, events = seq
    pb = play(events, configs(rate, honour, prebuffer))
    arrivals = pb.arrival_ns
    last_end = None
    for u in pb.underflows:
        assert u.start_ns < u.end_ns
        if last_end is not None:
            assert u.start_ns >= last_end
        last_end = u.end_ns
        assert u.end_ns in arrivals  # ends when a frame arrives
        before = [a for a in arrivals if a < u.end_ns]
        assert before and u.start_ns >= max(before)  # ran dry after the previous frame arrived
        # Nothing plays during an underflow.
        assert all(b <= u.start_ns or a >= u.end_ns for a, b in pb.playing)


@settings(max_examples=300, deadline=None)
@given(sequences(clears=False), prebuffers)
def test_without_clears_playing_time_is_samples_over_rate(seq, prebuffer) -> None:
    rate, events = seq
    pb = play(events, configs(rate, True, prebuffer))
    playing_ns = sum(b - a for a, b in pb.playing)
    exact = pb.samples_received * NS / rate
    # Each run rounds its length down once, to the ns.
    assert exact - len(pb.playing) <= playing_ns <= exact
    if NS % rate == 0:
        assert playing_ns == exact


def brute_force(rate: int, events: list[tuple]) -> tuple[int, list[int], list[tuple[int, int]]]:
    """Sample-by-sample playback (prebuffer 0, no clears) at a rate that divides a second: the
    maximum buffer, each frame's first sample start, and the underflows."""
    period = NS // rate
    starts: list[int] = []  # every sample's start
    arrivals: list[int] = []  # every sample's arrival
    frame_starts: list[int] = []
    underflows = []
    ended_since_audio = True
    for event in events:
        if event[0] == "end":
            ended_since_audio = True
            continue
        _, t, samples = event[:3]
        free_at = starts[-1] + period if starts else t
        if starts and free_at < t and not ended_since_audio:
            underflows.append((free_at, t))
        ended_since_audio = False
        for k in range(samples):
            starts.append(max(t, free_at) + k * period)
            arrivals.append(t)
        frame_starts.append(max(t, free_at))
    # B changes only at arrivals and sample starts; at time x it is arrived(<= x) - started(< x).
    # Counted by bisection over the sorted sample times (both lists are already in time order).
    best = 0
    for x in set(arrivals) | set(starts):
        best = max(best, bisect.bisect_right(arrivals, x) - bisect.bisect_left(starts, x))
    return best, frame_starts, underflows


@settings(max_examples=200, deadline=None)
@given(sequences(clears=False, rates=(8000, 16000)))
def test_max_buffered_and_timing_match_a_sample_level_simulation(seq) -> None:
    rate, events = seq
    # Small cases: at most 12 events, frames of at most 200 samples, all audible.
    events = [
        e if e[0] != "audio" else ("audio", e[1], min(e[2], 200), 0, min(e[2], 200) - 1) for e in events
    ]
    events = events[:12]
    pb = play(events, ListenerConfig(sample_rate=rate))
    best, frame_starts, underflows = brute_force(rate, events)
    assert pb.max_buffered_samples == best
    assert pb.max_buffered_ms == best * 1000 / rate
    assert pb.play_start_ns == frame_starts
    assert [(u.start_ns, u.end_ns) for u in pb.underflows] == underflows
