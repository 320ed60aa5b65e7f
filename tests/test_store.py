"""The local server's call store stays bounded over a long run and keeps its counts exact."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from uvbench.server.config import AgentBehaviour, ConfigError, Faults, server_config_from_dict
from uvbench.server.state import ServerState
from uvbench.server.store import MAX_CONCURRENCY_SAMPLES, CallRecord, CallStore

WALL = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _record(n: int) -> CallRecord:
    return CallRecord(
        call_id=f"call-{n}",
        request={},
        created_ns=n,
        created=WALL,
        join_url="ws://x",
        agent=AgentBehaviour(),
        faults=Faults(),
    )


def test_the_oldest_ended_calls_are_forgotten_never_a_live_one() -> None:
    store = CallStore(keep_ended=3)
    records = [_record(n) for n in range(6)]
    for r in records:
        store.add(r)
    # Call 0 stays live the whole time; 1..5 end in order.
    for n in range(1, 6):
        store.mark_ended(records[n], 100 + n, "hangup")
    assert list(store.calls) == ["call-0", "call-3", "call-4", "call-5"]
    assert store.forgotten == 2 and store.active_counts() == (1, 0)
    store.mark_ended(records[0], 200, "hangup")  # now it is the newest ended: 3 goes
    assert list(store.calls) == ["call-0", "call-4", "call-5"]


def test_active_counts_match_a_scan_of_the_calls() -> None:
    rng = random.Random(7)
    store = CallStore(keep_ended=5)
    records: list[CallRecord] = []
    for step in range(2_000):
        action = rng.random()
        if action < 0.35 or not records:
            records.append(_record(step))
            store.add(records[-1])
        else:
            r = rng.choice(records)
            if action < 0.6:
                store.mark_joined(r, step, None)
            elif action < 0.9:
                store.mark_ended(r, step, "hangup")
            else:
                store.delete(r.call_id)
        live = [c for c in store.calls.values() if c.ended_ns is None]
        scan = (len(live), sum(1 for c in live if c.joined_ns is not None))
        assert store.active_counts() == scan, step
        assert len(store.calls) - len(live) <= 5


def test_concurrency_samples_are_bounded() -> None:
    store = CallStore()
    for n in range(MAX_CONCURRENCY_SAMPLES // 3 + 10):
        r = _record(n)
        store.add(r)
        store.mark_joined(r, n, None)
        store.mark_ended(r, n, "hangup")
    assert MAX_CONCURRENCY_SAMPLES // 2 <= len(store.concurrency) <= MAX_CONCURRENCY_SAMPLES
    assert store.concurrency[-1].total == 0 and len(store.calls) == 1_000


def test_keep_calls_comes_from_the_config() -> None:
    config = server_config_from_dict({"keep_calls": 50})
    assert ServerState(config).store.keep_ended == 50
    for bad in (0, -1, 2_000_000, "many", True):
        with pytest.raises(
            ConfigError, match="keep_calls: expected a whole number of calls from 1 to 1,000,000"
        ):
            server_config_from_dict({"keep_calls": bad})
