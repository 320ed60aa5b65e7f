"""CreateLimiter against a fake clock: plan windows, Retry-After and the concurrency cap."""

from __future__ import annotations

from uvbench.server.config import PLANS, Plan
from uvbench.server.limits import CreateLimiter, Refusal

S = 1_000_000_000
MS = 1_000_000


def create_at(limiter: CreateLimiter, now_ns: int, active: int = 0) -> Refusal | None:
    refusal = limiter.check(now_ns, active)
    if refusal is None:
        limiter.record(now_ns)
    return refusal


def test_sixth_create_within_a_second_is_refused_until_the_window_frees() -> None:
    limiter = CreateLimiter(Plan("t", creates_per_second=5, creates_per_minute=30))
    t0 = 100 * S
    for i in range(5):
        assert create_at(limiter, t0 + i * 100 * MS) is None
    refusal = create_at(limiter, t0 + 500 * MS)
    assert refusal is not None
    assert refusal.status == 429
    # The first creation leaves the window at t0 + 1 s, 0.5 s from now: rounded up to 1 s.
    assert refusal.retry_after_s == 1
    assert "5 calls per second" in refusal.detail
    # Still refused just before the first creation leaves the window, allowed at the boundary.
    assert create_at(limiter, t0 + S - 1) is not None
    assert create_at(limiter, t0 + S) is None


def test_retry_after_rounds_partial_seconds_up_and_is_at_least_one() -> None:
    limiter = CreateLimiter(Plan("t", creates_per_second=1))
    assert create_at(limiter, 0) is None
    refusal = limiter.check(S - 1, 0)
    assert refusal is not None and refusal.retry_after_s == 1
    limiter = CreateLimiter(Plan("t", creates_per_minute=1))
    assert create_at(limiter, 0) is None
    refusal = limiter.check(10 * S + 1, 0)
    assert refusal is not None and refusal.retry_after_s == 50


def test_thirty_first_create_within_a_minute_is_refused_with_the_minute_wait() -> None:
    limiter = CreateLimiter(PLANS["paygo"])
    # 4 per second stays under the 5/s window; 30 of them take 7.25 s.
    for i in range(30):
        assert create_at(limiter, i * 250 * MS) is None, i
    now = 30 * 250 * MS
    refusal = create_at(limiter, now)
    assert refusal is not None
    assert refusal.status == 429
    assert "30 calls per minute" in refusal.detail
    assert "per second" not in refusal.detail
    # The first creation (t = 0) leaves the minute window at 60 s: 52.5 s from now -> 53.
    assert refusal.retry_after_s == 53
    assert create_at(limiter, 60 * S - 1) is not None
    assert create_at(limiter, 60 * S) is None
    # Only one slot freed: the next one waits for the creation made at 0.25 s.
    refusal = create_at(limiter, 60 * S + 1)
    assert refusal is not None and refusal.retry_after_s == 1


def test_concurrency_cap_counts_active_calls_and_asks_to_retry_in_a_second() -> None:
    limiter = CreateLimiter(PLANS["free"])
    assert limiter.check(0, active_calls=4) is None
    refusal = limiter.check(0, active_calls=5)
    assert refusal == Refusal(429, 1, refusal.detail)
    assert "Concurrency limit" in refusal.detail and "5" in refusal.detail
    # A refusal is not a creation: nothing was recorded.
    for i in range(5):
        assert create_at(limiter, 10 * S + i) is None


def test_several_limits_at_once_name_all_and_use_the_longest_wait() -> None:
    limiter = CreateLimiter(Plan("t", max_concurrent=1, creates_per_second=1, creates_per_minute=1))
    assert create_at(limiter, 0) is None
    refusal = limiter.check(500 * MS, active_calls=1)
    assert refusal is not None
    assert "Concurrency" in refusal.detail and "per second" in refusal.detail
    assert "per minute" in refusal.detail
    assert refusal.retry_after_s == 60


def test_zero_means_unlimited() -> None:
    limiter = CreateLimiter(PLANS["unlimited"])
    for i in range(1000):
        assert create_at(limiter, i, active=i) is None
    pro = CreateLimiter(PLANS["pro"])
    assert pro.check(0, active_calls=10_000) is None


def test_old_creations_are_forgotten() -> None:
    limiter = CreateLimiter(Plan("t", creates_per_minute=2))
    assert create_at(limiter, 0) is None
    assert create_at(limiter, S) is None
    assert create_at(limiter, 2 * S) is not None
    # At 61 s both earlier creations are a full minute old (a window is half-open).
    assert create_at(limiter, 61 * S) is None
    assert list(limiter._stamps) == [61 * S]
