"""Call-creation limits of an Ultravox plan (as Ultravox documents them), without I/O.

Ultravox refuses a create with 429 when the account makes more than N calls in a second or M in
a minute ("whichever hits first"), or when a hard concurrency cap is reached (Free/PAYGO: 5). The
limiter never reads a clock: the caller passes the monotonic time in nanoseconds, so tests drive it
with a fake clock and the REST layer with `CallStore.clock`.

Choices where the spec is silent:
- Only calls actually created count toward the windows (the REST layer calls `record` after a
  create succeeded), so refused or invalid requests do not use up the budget.
- Created-but-not-ended calls count toward the concurrency cap (PROTOCOL §5/§13: the concurrency
  endpoint's `maxTotalCalls` includes unjoined calls).
- When several limits refuse at once, the answer names all of them and Retry-After is the longest
  wait, so a client that honours it is not refused again by another window.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

from uvbench.server.config import Plan

NS_PER_S = 1_000_000_000
SECOND_NS = NS_PER_S
MINUTE_NS = 60 * NS_PER_S
CONCURRENCY_RETRY_AFTER_S = 1
"""A concurrency slot frees when some call ends, which nobody can predict: ask to retry soon."""


@dataclass(frozen=True)
class Refusal:
    """Why a create is refused: the HTTP status, the Retry-After seconds and the `detail` text."""

    status: int
    retry_after_s: int
    detail: str


class CreateLimiter:
    """Sliding one-second and one-minute windows of creations plus the concurrent-call cap."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._stamps: deque[int] = deque()
        """Creation times (ns) within the last minute, oldest first."""

    def check(self, now_ns: int, active_calls: int) -> Refusal | None:
        """None when a call may be created now; else the refusal to answer with."""
        self._forget_before(now_ns - MINUTE_NS)
        refusals: list[Refusal] = []
        cap = self.plan.max_concurrent
        if cap and active_calls >= cap:
            refusals.append(
                Refusal(
                    429,
                    CONCURRENCY_RETRY_AFTER_S,
                    f"Concurrency limit reached: {active_calls} active calls, the {self.plan.name} "
                    f"plan allows {cap} at a time.",
                )
            )
        for limit, window_ns, unit in (
            (self.plan.creates_per_second, SECOND_NS, "second"),
            (self.plan.creates_per_minute, MINUTE_NS, "minute"),
        ):
            wait_ns = self._window_wait_ns(now_ns, limit, window_ns)
            if wait_ns is not None:
                refusals.append(
                    Refusal(
                        429,
                        max(1, math.ceil(wait_ns / NS_PER_S)),
                        f"Call creation rate limit exceeded: the {self.plan.name} plan allows "
                        f"{limit} calls per {unit}.",
                    )
                )
        if not refusals:
            return None
        return Refusal(
            429,
            max(r.retry_after_s for r in refusals),
            " ".join(r.detail for r in refusals),
        )

    def record(self, now_ns: int) -> None:
        """Counts a call created at `now_ns`."""
        self._stamps.append(now_ns)

    # -- internals ---------------------------------------------------------------------------------
    def _forget_before(self, cutoff_ns: int) -> None:
        # A creation at t counts while now - t < window; older ones can never matter again.
        while self._stamps and self._stamps[0] <= cutoff_ns:
            self._stamps.popleft()

    def _window_wait_ns(self, now_ns: int, limit: int, window_ns: int) -> int | None:
        """How long until the window has room for one more creation; None if it has room now."""
        if not limit:
            return None
        stamps = list(self._stamps)
        first_in_window = bisect_right(stamps, now_ns - window_ns)
        in_window = stamps[first_in_window:]
        if len(in_window) < limit:
            return None
        # Room appears when all but limit - 1 of them have left the window: the one at this index
        # is the last that must leave.
        leaving = in_window[len(in_window) - limit]
        return leaving + window_ns - now_ns
