"""The script's live view of agent audio: frames taken in when asked give what taking each in as it
arrived gives (the pacing loop only queues them; call/live.py). And the run's live view on a
terminal (report/live.py): its clock, its bar, its table."""

from __future__ import annotations

import io
import re
import time
from array import array

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from uvbench.call.live import MERGE_GAP_NS, NS, SETTLE_FRAMES, LivePlayback
from uvbench.metrics.aggregate import UNDERFLOW_MIN_AUDIO_S
from uvbench.protocol.audio import audible_bounds
from uvbench.report.live import LiveView
from uvbench.runner.fanout import RunState

RATE = 16_000
MS = 1_000_000

frame = st.sampled_from(
    [
        bytes(640),  # digital silence
        (np.full(320, 900, dtype="<i2")).tobytes(),  # loud at both ends
        np.concatenate([np.zeros(100), np.full(120, -2000), np.zeros(100)]).astype("<i2").tobytes(),
        np.concatenate([np.full(10, 40), np.zeros(310)]).astype("<i2").tobytes(),
        b"",
        b"\x01\x02\x03",  # a sample and an odd byte, which is no sample
    ]
)
event = st.one_of(
    st.tuples(st.just("frame"), st.integers(0, 40), frame),
    st.tuples(st.just("clear"), st.integers(0, 40), st.none()),
    st.tuples(st.just("read"), st.integers(0, 40), st.none()),
)


def eager_receive(playback: LivePlayback, rows: array, t_ns: int, data: bytes) -> None:
    """The reference: each frame taken in as it arrives, written from the rule alone (it plays
    from its arrival or when the audio before it ends; its audible samples extend the last stretch
    of speech when less than MERGE_GAP_NS after it, else start one)."""
    first, last = audible_bounds(data)
    samples = len(data) >> 1
    rows.extend((t_ns, samples, first, last))
    start = max(t_ns, playback.play_end_ns)
    if first >= 0:
        a = start + first * NS // RATE
        b = start + (last + 1) * NS // RATE
        if playback.stretches and a - playback.stretches[-1][1] < MERGE_GAP_NS:
            playback.stretches[-1][1] = max(playback.stretches[-1][1], b)
        else:
            playback.stretches.append([a, b])
    playback.play_end_ns = start + samples * NS // RATE


def reads(playback: LivePlayback, t_ns: int) -> tuple:
    return (
        playback.first_audible_ns,
        playback.last_audible_heard_ns,
        playback.audible_since(t_ns),
        playback.next_audible_start(t_ns),
    )


@given(st.lists(event, max_size=3 * SETTLE_FRAMES), st.booleans())
def test_frames_taken_in_when_asked_give_what_taking_each_at_once_gives(events, honor_clear):
    lazy, eager = LivePlayback(RATE, honor_clear), LivePlayback(RATE, honor_clear)
    lazy.rows, eager_rows = array("q"), array("q")
    recorded: list[bytes] = []
    lazy.record = recorded.append
    received: list[bytes] = []
    t = 0
    for kind, gap_ms, data in events:
        t += gap_ms * MS
        if kind == "frame":
            lazy.receive(t, data)
            eager_receive(eager, eager_rows, t, data)
            received.append(data[: len(data) & ~1])
        elif kind == "clear":
            lazy.on_clear(t)
            eager.on_clear(t)
        else:
            assert reads(lazy, t) == reads(eager, t)
    lazy.settle()
    assert lazy.rows == eager_rows  # every frame's row, in arrival order
    assert (lazy.stretches, lazy.play_end_ns) == (eager.stretches, eager.play_end_ns)
    assert b"".join(recorded) == b"".join(received)  # the audio, in order, whole samples only


def test_frames_wait_no_longer_than_settle_frames():
    playback = LivePlayback(RATE)
    playback.rows = array("q")
    loud = np.full(320, 900, dtype="<i2").tobytes()
    for k in range(SETTLE_FRAMES - 1):
        playback.receive(k * 20 * MS, loud)
    assert len(playback.rows) == 0  # nobody asked yet: queued, not scanned
    playback.receive(SETTLE_FRAMES * 20 * MS, loud)
    assert len(playback.rows) == 4 * SETTLE_FRAMES


# -- the run's live view (report/live.py) -----------------------------------------------------------


def _shown(view) -> str:
    """The live view as a terminal shows it, as plain text."""
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(view.render())
    return console.file.getvalue()


def _clock_s(text: str) -> int:
    (h, m, s) = re.search(r"\b(\d+):(\d\d):(\d\d)\b", text).groups()
    return int(h) * 3600 + int(m) * 60 + int(s)


def test_the_clock_keeps_running_while_the_last_calls_drain():
    # A 60 s load 100 s ago, two calls still in flight: the bar is full, the clock goes on.
    state = RunState(started=10, finished=8, in_flight=2)
    state.t0 = time.monotonic() - 100
    view = LiveView(state, total_calls=None, duration_s=60, enabled=True)
    first = _shown(view)
    state.t0 -= 65  # 65 s later, still draining
    later = _shown(view)
    assert _clock_s(first) >= 100 and _clock_s(later) >= _clock_s(first) + 65
    assert "60/60 s" in first and "waiting for 2 calls to end" in later
    state.in_flight = 0
    assert "waiting for" not in _shown(view)


def test_the_bar_says_what_it_counts():
    state = RunState(started=3, finished=2, in_flight=1)
    state.t0 = time.monotonic() - 30
    by_calls = _shown(LiveView(state, total_calls=5, duration_s=None, enabled=True))
    bar = by_calls.splitlines()[0]
    assert bar.startswith("calls") and re.search(r"\b2/5 \d+:\d\d:\d\d", bar)  # calls, not seconds
    by_time = _shown(LiveView(state, total_calls=None, duration_s=60, enabled=True))
    bar = by_time.splitlines()[0]
    assert bar.startswith("time") and re.search(r"\b30/60 s\b", bar) and "calls" not in bar


def test_the_clock_waits_for_the_first_call():
    state = RunState()  # the processes are still starting
    state.t0 = time.monotonic() - 12
    assert _clock_s(_shown(LiveView(state, total_calls=4, duration_s=None, enabled=True))) == 0


def test_no_underflow_rate_from_a_few_seconds_of_audio():
    state = RunState(started=1, finished=1, underflows=1, agent_audio_ms=(UNDERFLOW_MIN_AUDIO_S - 1) * 1000)
    row = _shown(LiveView(state, total_calls=1, duration_s=None, enabled=True)).splitlines()[-1]
    assert row.split()[8] == "—"  # underflows/min, not 1 underflow over 9 s as 6.67/min
    state.agent_audio_ms = 120_000.0
    row = _shown(LiveView(state, total_calls=1, duration_s=None, enabled=True)).splitlines()[-1]
    assert row.split()[8] == "0.50"
