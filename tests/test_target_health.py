"""A target that refuses every create is backed off and, after a while, given up on."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.short_scenario import write_short_scenario
from uvbench.call.rest import CallFailed, UltravoxApi
from uvbench.call.target_health import BACKOFF_MAX_S, BACKOFF_START_S, GIVE_UP_MIN_ATTEMPTS, TargetHealth
from uvbench.cli import main
from uvbench.server import LocalServer, ServerConfig

BODY = {"medium": {"serverWebSocket": {"inputSampleRate": 16000}}}
DEAD = "http://127.0.0.1:9/api"  # the discard port: nothing listens there on a test machine


def test_backoff_grows_per_try_not_per_call_refused_together() -> None:
    health = TargetHealth(DEAD, give_up_after_s=30)
    assert health.admit(0.0) == 0.0  # healthy: everyone goes
    for _ in range(50):  # fifty calls sent at once, refused at once: one try
        health.failed(0.01, "refused", sent_at=0.0)
    assert health.backoff_s == BACKOFF_START_S
    assert health.admit(0.02) == pytest.approx(BACKOFF_START_S - 0.01)  # the others wait
    t = 0.01 + BACKOFF_START_S
    assert health.admit(t) == 0.0  # the period's one try...
    assert health.admit(t) > 0  # ...and only one
    health.failed(t + 0.01, "refused", sent_at=t)
    assert health.backoff_s == 2 * BACKOFF_START_S
    for _ in range(20):
        health.failed(health.next_try_at, "refused", sent_at=health.next_try_at)
    assert health.backoff_s == BACKOFF_MAX_S


def test_a_success_ends_the_streak() -> None:
    health = TargetHealth(DEAD, give_up_after_s=30)
    health.failed(1.0, "refused", sent_at=1.0)
    assert health.admit(1.1) > 0
    health.succeeded()
    assert health.admit(1.1) == 0.0 and health.failing_since is None and health.backoff_s == 0


def test_gives_up_only_after_the_time_and_enough_attempts() -> None:
    health = TargetHealth(DEAD, give_up_after_s=30)
    health.failed(0.0, "a", sent_at=0.0)
    health.failed(40.0, "b", sent_at=25.0)  # long enough, but two tries say little
    assert GIVE_UP_MIN_ATTEMPTS > 2 and health.gave_up is None
    health.failed(41.0, "cannot reach it (connection refused)", sent_at=40.5)
    assert health.gave_up == (
        f"every create at {DEAD} failed for 41 s (3 attempts; the last: cannot reach it (connection"
        " refused)): run stopped (--give-up-after 30s)"
    )
    never = TargetHealth(DEAD, give_up_after_s=None)
    for t in range(100):
        never.failed(t * 60.0, "refused", sent_at=t * 60.0)
    assert never.gave_up is None


async def test_waiting_creates_go_as_soon_as_the_target_answers_again() -> None:
    async with LocalServer(ServerConfig()) as server:
        async with UltravoxApi(server.api_url, server.api_key) as api:
            # As if creates had been failing: the backoff holds new ones for a long while...
            api.health.failed(time.monotonic(), "refused", sent_at=time.monotonic())
            api.health.backoff_s = api.health.next_try_at = 0.0
            api.health.failed(time.monotonic(), "refused", sent_at=time.monotonic())
            api.health.next_try_at = time.monotonic() + 0.3
            api.health.backoff_s = 60.0
            started = time.monotonic()
            # ...one try goes after 0.3 s, succeeds, and the other four go with it, not 60 s later.
            calls = await asyncio.wait_for(asyncio.gather(*(api.create_call(BODY) for _ in range(5))), 30)
            assert len({c["callId"] for c in calls}) == 5
            assert time.monotonic() - started < 30
            assert api.health.failing_since is None


async def test_an_unreachable_api_is_tried_a_few_times_not_hammered() -> None:
    sent: list[int] = []
    async with UltravoxApi(DEAD, "k") as api:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # one VU: its next call as soon as one fails
            with pytest.raises(CallFailed, match="connection refused"):
                await api.create_call(BODY, on_attempt=lambda a, t, answer: answer or sent.append(t))
    # A refused connection fails in about a millisecond: a thousand creates in two seconds without
    # the backoff. With it: at 0, 0.25, 0.75, 1.75 s (and one more if the loop's wait ends late).
    assert 3 <= len(sent) <= 6
    gaps = [(b - a) / 1e9 for a, b in zip(sent, sent[1:], strict=False)]
    assert gaps[0] >= BACKOFF_START_S * 0.9 and gaps[1] >= 2 * BACKOFF_START_S * 0.9


def test_a_run_against_a_dead_target_stops_with_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DEAD_TARGET_KEY", "k")
    scenario = write_short_scenario(
        tmp_path, "dead", target=f"{{base_url: '{DEAD}', api_key_env: DEAD_TARGET_KEY}}"
    )
    argv = ["run", str(scenario), "--vus", "20", "--duration", "5m", "--give-up-after", "2s"]
    started = time.monotonic()
    code = main([*argv, "--out", str(tmp_path / "out"), "-q"])
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 3
    errors = [line for line in err.splitlines() if line.startswith("uvbench: error:")]
    assert len(errors) == 1 and f"every create at {DEAD} failed for" in errors[0]
    assert "(connection refused)): run stopped (--give-up-after 2s)" in errors[0]
    assert elapsed < 120  # it stopped itself, long before the five minutes
    [folder] = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert summary["gave_up"] == errors[0].removeprefix("uvbench: error: ")
    page = (folder / "report.html").read_text()
    assert '<div class="banner bad">✗ the run gave up: every create at' in page
    # Every call started is accounted for: tried and refused, or stopped while it waited its turn.
    assert {r["outcome"] for r in records} <= {"failed:create", "interrupted"}
    assert summary["calls"] == len(records) and summary["outcomes"].get("failed:create", 0) >= 3
    tried = summary["outcomes"]["failed:create"]
    # Twenty VUs whose calls fail in a millisecond start a new one every 50 ms without the backoff:
    # hundreds of creates over the seconds before the give-up. With it, a handful per backoff period.
    assert tried <= 20 + 2 * elapsed / BACKOFF_START_S
    assert tried < 60
    for r in records:
        if r["outcome"] == "failed:create":
            assert (
                r["outcome_detail"]
                == f"the call was never created: cannot reach {DEAD}/calls (connection refused)"
            )
        else:
            assert r["outcome_detail"].startswith("the run gave up: every create at")
