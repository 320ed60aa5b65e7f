"""The script's live view of agent audio: frames taken in when asked give what taking each in as it
arrived gives (the pacing loop only queues them; call/live.py)."""

from __future__ import annotations

from array import array

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from uvbench.call.live import MERGE_GAP_NS, NS, SETTLE_FRAMES, LivePlayback
from uvbench.protocol.audio import audible_bounds

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
