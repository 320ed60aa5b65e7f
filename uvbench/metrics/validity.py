"""Which figures of a call the load generator can vouch for (docs/metrics.md, "Generator health and
validity").

A figure is measured from stamps the client took: the stream time of the user's speech (which only
holds when the chunks carrying it left on time) and arrival times of frames and messages (which only
hold when the process's event loop was not held up when they came in). When either was off by more
than the tolerance (half a chunk) around a figure, that figure is *set apart*: kept in the record
with its reason, left out of every figure and gate. The rest of the call still counts.

Sans-I/O and pure: every function takes integer ns timestamps (or the timeline's audio_out rows)
and returns verdicts; `uvbench.metrics.call.compute` applies them.

- `tolerance_ns(chunk_ms)`: half a chunk.
- `anchor_chunks` / `anchor_lateness_ns`: the chunks that carry a turn's or barge-in's anchor and
  how late the latest of them left; `turn_anchor_end` / `barge_in_anchor_end` bound them. With a
  network impairment of the outgoing stream a chunk is late against its release, not its deadline
  (pass `Chunk.due_ns` = the release): a link that holds audio is what the run measures, not a
  generator that fell behind, and never sets a figure apart.
- `LoopLag`: the `loop.lag` event of a timeline; `LoopLag.lag_at(t)` is how uncertain a stamp t is
  (`LagIndex`: the same, quicker for many stamps).
- `set_apart_reasons`, `split`, `validity_of`, `item_set_apart`, `call_set_apart_detail`: the
  verdicts, per figure, per turn or barge-in, and for the call as a whole.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

NS = 1_000_000_000
MS = 1_000_000

ANCHOR_LATE = "anchor_late"
"""The outgoing chunks carrying the figure's anchor left later than the tolerance."""
LOOP_LAG = "loop_lag"
"""The event loop was held up around one of the figure's stamps by more than the tolerance."""
REASONS = (ANCHOR_LATE, LOOP_LAG)
"""Every reason, strongest first: a figure with both is set apart as `anchor_late`."""

ANCHOR_WAIT_NS = 10 * NS
"""How long after its anchor an unanswered turn's (or barge-in's) anchor window runs at most."""

TURN_FIGURES = (
    "turn.ttfb_ms",
    "turn.ttfa_ms",
    "turn.ttfa_heard_ms",
    "turn.thinking_ms",
    "turn.agent_transcript_ms",
    "turn.user_transcript_ms",
    "turn.talk_over_ms",
)
"""A turn's latency-like figures: the ones that may be set apart (playback figures never are)."""
INTERRUPT_FIGURES = (
    "interrupt.clear_ms",
    "interrupt.last_audio_ms",
    "interrupt.silence_ms",
    "interrupt.talk_over_ms",
    "interrupt.response_ms",
)
"""Every figure of a barge-in."""
CALL_FIGURES = ("call.create_ms", "call.join_ms", "call.started_ms", "call.first_audio_ms")
"""The call-level figures that may be set apart (for loop lag only: they have no outgoing anchor)."""


class Chunk(NamedTuple):
    """One row of a timeline's `audio_out`: an outgoing chunk."""

    due_ns: int
    """When its last sample was captured (it could not have been sent before)."""
    sent_ns: int
    start_sample: int
    end_sample: int
    """Its samples are [start_sample, end_sample) of the outgoing stream."""


def tolerance_ns(chunk_ms: float | None) -> int | None:
    """Half a chunk, in ns; None when the chunk length is unknown (nothing is then set apart)."""
    if chunk_ms is None or not math.isfinite(chunk_ms) or chunk_ms <= 0:
        return None
    return round(chunk_ms * MS / 2)


# ------------------------------------------------------------------------------------------------
# Anchors: the chunks that carry them


def anchor_chunks(chunks: Sequence[Chunk], sample: int, window_end_ns: int) -> list[Chunk]:
    """The chunks carrying an anchor at stream sample `sample`: the chunk holding that sample, then
    every later chunk due before `window_end_ns`. `chunks` are in stream order (start_sample
    increasing); empty when no chunk holds the sample (the stream ended before it)."""
    k = bisect.bisect_right(chunks, sample, key=lambda c: c.start_sample) - 1
    if k < 0 or not chunks[k].start_sample <= sample < chunks[k].end_sample:
        return []
    picked = [chunks[k]]
    for chunk in chunks[k + 1 :]:
        if chunk.due_ns >= window_end_ns:
            break
        picked.append(chunk)
    return picked


def anchor_lateness_ns(chunks: Iterable[Chunk]) -> int | None:
    """The largest sent - due of `chunks`; None when there is none."""
    return max((c.sent_ns - c.due_ns for c in chunks), default=None)


def turn_anchor_end(t_se: int, first_audio_ns: int | None, reply_window_end: int | None) -> int:
    """End of a turn's anchor window: the arrival of its reply's first frame when it has one, else
    the earlier of the end of its reply window and `t_se` + 10 s."""
    if first_audio_ns is not None:
        return first_audio_ns
    bound = t_se + ANCHOR_WAIT_NS
    return bound if reply_window_end is None else min(reply_window_end, bound)


def barge_in_anchor_end(
    t_bi: int, response_ns: int | None, silent_ns: int | None, reply_window_end: int | None
) -> int:
    """End of a barge-in's anchor window: when the agent's response is heard, else when the agent went
    silent if that is after `t_bi`; never after the end of its reply window nor `t_bi` + 10 s."""
    bound = t_bi + ANCHOR_WAIT_NS
    if reply_window_end is not None:
        bound = min(bound, reply_window_end)
    if response_ns is not None:
        return min(response_ns, bound)
    if silent_ns is not None and silent_ns > t_bi:
        return min(silent_ns, bound)
    return bound


# ------------------------------------------------------------------------------------------------
# The event loop


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)


class LoopLag(NamedTuple):
    """A `loop.lag` event: the loop was probed at least every `period_ns`; `late` lists the probes
    that ran more than `floor_ns` after they were due, as (fire_ns, lag_ns), by fire_ns."""

    period_ns: int
    floor_ns: int
    late: tuple[tuple[int, int], ...]

    @classmethod
    def from_data(cls, data: Any) -> LoopLag | None:
        """The event's data read leniently (malformed entries skipped); None when it has no period."""
        if not isinstance(data, Mapping):
            return None
        period = _int(data.get("period_ns"))
        if period is None or period < 0:
            return None
        late = []
        for entry in data.get("late") or ():
            if type(entry) is list and len(entry) == 2 and type(entry[0]) is int and type(entry[1]) is int:
                if entry[1] >= 0:  # as saved: two plain integers (the checks below, quicker)
                    late.append((entry[0], entry[1]))
                continue
            if isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2:
                fire, lag = _int(entry[0]), _int(entry[1])
                if fire is not None and lag is not None and lag >= 0:
                    late.append((fire, lag))
        return cls(period, _int(data.get("floor_ns")) or 0, tuple(sorted(late)))

    @property
    def max_lag_ns(self) -> int:
        """The largest lag listed; 0 when none was."""
        return max((lag for _, lag in self.late), default=0)

    def lag_at(self, t_ns: int) -> int:
        """How uncertain a stamp taken at `t_ns` is: 0 when no late probe has
        fire - lag - period <= t <= fire + period, else period + the largest lag of those that do."""
        worst: int | None = None
        for fire, lag in self.late:
            if fire - lag - self.period_ns <= t_ns <= fire + self.period_ns:
                worst = lag if worst is None else max(worst, lag)
        return 0 if worst is None else self.period_ns + worst


class LagIndex:
    """`LoopLag.lag_at` for the many stamps of one call: the same answers, found by bisection over
    the late probes (those that can reach `t` fire within [t - period, t + period + largest lag])."""

    def __init__(self, loop: LoopLag) -> None:
        self.loop = loop
        self._fires = [fire for fire, _ in loop.late]
        self._reach = loop.period_ns + loop.max_lag_ns

    def lag_at(self, t_ns: int) -> int:
        period, late = self.loop.period_ns, self.loop.late
        lo = bisect.bisect_left(self._fires, t_ns - period)
        hi = bisect.bisect_right(self._fires, t_ns + self._reach, lo)
        worst: int | None = None
        for fire, lag in late[lo:hi]:
            if fire - lag - period <= t_ns <= fire + period:
                worst = lag if worst is None else max(worst, lag)
        return 0 if worst is None else period + worst


# ------------------------------------------------------------------------------------------------
# Verdicts


def set_apart_reasons(
    names: Iterable[str],
    *,
    anchor_late: bool,
    stamps: Mapping[str, Iterable[int | None]],
    loop: LoopLag | LagIndex | None,
    tolerance: int | None,
) -> dict[str, str]:
    """Why each of `names` is set apart (absent: it stands). All of them when the anchor was late;
    otherwise those with a stamp (`stamps[name]`: its start and end stamps taken by the call) whose
    `loop.lag_at` exceeds the tolerance. Nothing without a tolerance."""
    if tolerance is None:
        return {}
    reasons: dict[str, str] = {}
    for name in names:
        if anchor_late:
            reasons[name] = ANCHOR_LATE
        elif loop is not None and any(
            t is not None and loop.lag_at(t) > tolerance for t in stamps.get(name, ())
        ):
            reasons[name] = LOOP_LAG
    return reasons


def split(
    metrics: Mapping[str, Any], reasons: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the figures that stand, the set-apart ones as {name: {"value", "reason"}}). A figure with no
    value (None: not measured) stays where it is: there is nothing to set apart."""
    kept: dict[str, Any] = {}
    apart: dict[str, dict[str, Any]] = {}
    for name, value in metrics.items():
        if value is not None and name in reasons:
            apart[name] = {"value": value, "reason": reasons[name]}
        else:
            kept[name] = value
    return kept, apart


def strongest(reasons: Iterable[str]) -> str | None:
    """The reason that wins among `reasons` (anchor_late over loop_lag); None when there is none."""
    present = set(reasons)
    return next((r for r in REASONS if r in present), None)


def validity_of(set_apart: Mapping[str, Mapping[str, Any]]) -> str:
    """A turn's or barge-in's `validity`: "valid", or "set_apart:<reason>" when any of its figures
    is set apart."""
    reason = strongest(entry["reason"] for entry in set_apart.values())
    return "valid" if reason is None else f"set_apart:{reason}"


def item_set_apart(
    kept: Mapping[str, Any], set_apart: Mapping[str, Mapping[str, Any]], names: Iterable[str]
) -> str | None:
    """The reason a whole anchored item (a turn, a barge-in, the greeting) is set apart: when some of
    its figures `names` are set apart and none of them stands measured. None otherwise."""
    names = tuple(names)
    if any(kept.get(name) is not None for name in names):
        return None
    return strongest(set_apart[name]["reason"] for name in names if name in set_apart)


def call_set_apart_detail(items: Sequence[str | None]) -> str | None:
    """The call's whole verdict over its anchored items (each None when it stands, else the reason
    it is set apart): a detail line when it has at least one and every one is set apart."""
    if not items or any(reason is None for reason in items):
        return None
    counts = ", ".join(f"{r} {n}" for r in REASONS if (n := sum(1 for x in items if x == r)))
    return f"all {len(items)} anchored items set apart: {counts}"
