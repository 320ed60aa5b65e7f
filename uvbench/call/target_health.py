"""Whether a target takes calls: backs creates off while it refuses them all, and says when to give up.

Without it a load against a target that is down (a wrong port, an expired key, a service outage)
hammers it: each VU's call fails in a millisecond and the next one starts, over a hundred failed
creates a second and a record each. Sans-I/O: the caller passes the time and sleeps itself
(`UltravoxApi.create_call` does).

- While every create fails, one try is let through per backoff period (a quarter second, doubling
  to `BACKOFF_MAX_S`); the other calls wait for it. The first create that succeeds ends the streak
  and lets everyone through.
- A create refused with 429 or 503 and a Retry-After is retried by its own call first
  (`call/rest.py`); it counts here only once those retries are spent.
- When every create has failed for `give_up_after_s` (and at least `GIVE_UP_MIN_ATTEMPTS` were
  tried), `gave_up` holds one line saying so: the runner stops the run with it.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 10.0
GIVE_UP_AFTER_S = 30.0
"""The default of `uvbench run --give-up-after`."""
GIVE_UP_MIN_ATTEMPTS = 3
"""A streak this short says little, however long it took (one create that timed out after 15 s)."""


@dataclass
class TargetHealth:
    target: str
    """The API's URL, for the give-up line."""
    give_up_after_s: float | None = GIVE_UP_AFTER_S
    """None or 0: back off, never give up (locust decides when its run ends)."""
    failing_since: float | None = None
    """When the current streak of failed creates began; None while creates succeed."""
    failed_attempts: int = 0
    last_failure: str = ""
    backoff_s: float = 0.0
    backoff_since: float = 0.0
    """When the backoff last grew: the creates sent before then were already counted in it."""
    next_try_at: float = 0.0
    gave_up: str | None = None

    def admit(self, now: float) -> float:
        """0.0: send the create now (while failing, this claims the period's one try); otherwise
        how long to wait before asking again."""
        if self.failing_since is None:
            return 0.0
        if now >= self.next_try_at:
            self.next_try_at = now + self.backoff_s  # the others wait for this try's answer
            return 0.0
        return self.next_try_at - now

    def succeeded(self) -> None:
        self.failing_since = None
        self.failed_attempts = 0
        self.backoff_s = 0.0
        self.backoff_since = 0.0
        self.next_try_at = 0.0

    def failed(self, now: float, why: str, sent_at: float) -> None:
        """A create sent at `sent_at` failed for good (unreachable, timed out, refused after its own
        retries)."""
        if self.failing_since is None:
            self.failing_since = now
        self.failed_attempts += 1
        self.last_failure = why
        # Fifty calls sent together and refused together are one try, not fifty: only a create
        # sent after the backoff last grew makes it grow again.
        if sent_at >= self.backoff_since:
            self.backoff_s = min(BACKOFF_MAX_S, self.backoff_s * 2 if self.backoff_s else BACKOFF_START_S)
            self.backoff_since = now
            self.next_try_at = now + self.backoff_s
        limit = self.give_up_after_s
        if (
            self.gave_up is None
            and limit
            and now - self.failing_since >= limit
            and self.failed_attempts >= GIVE_UP_MIN_ATTEMPTS
        ):
            self.gave_up = (
                f"every create at {self.target} failed for {now - self.failing_since:.0f} s"
                f" ({self.failed_attempts} attempts; the last: {why}): run stopped"
                f" (--give-up-after {limit:g}s)"
            )
