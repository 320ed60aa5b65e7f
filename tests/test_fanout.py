"""The fan-out runner reaches the asked concurrency and arrival rate, as the server itself counts."""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import httpx
import pytest

from tests.outcomes import MEASURED
from uvbench.report.rebuild import UNREPORTED
from uvbench.runner.load import LoadError, LoadProfile, Stage, parse_stages
from uvbench.runner.run import run_scenarios
from uvbench.scenario import parse_scenarios
from uvbench.server.process import ServerProcess


def test_profiles_say_how_many_calls_and_when():
    ramp = LoadProfile(stages=(Stage(10, 20), Stage(10, 20), Stage(5, 0)))
    assert [ramp.target_at(t) for t in (0, 5, 10, 15, 22.5, 30)] == [0, 10, 20, 20, 10, 0]
    assert ramp.total_duration_s == 25 and ramp.stage_at(12) == 1
    rate = LoadProfile(arrival_rate=4, duration_s=3)
    assert [rate.arrival_s(k) for k in range(3)] == [0, 0.25, 0.5]
    assert rate.finished(3.0, 12) and not rate.finished(2.9, 11)
    assert parse_stages("30s:20, 1m:20,10s:0") == (Stage(30, 20), Stage(60, 20), Stage(10, 0))
    with pytest.raises(LoadError, match="is not duration:target"):
        parse_stages("30s-20")
    with pytest.raises(LoadError, match="needs a duration or a number of iterations"):
        LoadProfile(arrival_rate=2)
    with pytest.raises(LoadError, match="not both"):
        LoadProfile(arrival_rate=2, duration_s=5, stages=(Stage(1, 1),))


SHORT = """
    name: short
    call: {firstSpeakerSettings: {user: {}}}
    client: {record: false, ping_interval: 0}
    script:
      - silence: %ss
      - hang_up
"""


@pytest.fixture(scope="module")
def server():
    with ServerProcess() as process:
        yield process


def concurrency_peak(server) -> int:
    series = httpx.get(
        f"{server.api_url}/accounts/me/usage/concurrency", headers={"X-API-Key": server.api_key}
    ).json()["timeSeries"]
    return max(bucket["maxJoinedCalls"] for bucket in series)


@pytest.fixture
def scenario_for(server, monkeypatch):
    monkeypatch.setenv("UVBENCH_TEST_KEY", server.api_key)

    def make(seconds: float):
        (scenario,) = parse_scenarios(
            textwrap.dedent(SHORT % seconds).replace(
                "name: short",
                f"name: short\ntarget: {{base_url: {server.api_url}, api_key_env: UVBENCH_TEST_KEY}}",
            ),
            source="short.yaml",
            base_dir=".",
        )
        return scenario

    return make


def test_closed_model_holds_the_asked_concurrency(server, scenario_for, tmp_path):
    summary = run_scenarios(
        [scenario_for(3)], tmp_path, "closed", profile=LoadProfile(concurrency=8, iterations=8)
    )
    assert len(summary.records) == 8 and all(r["outcome"] in MEASURED for r in summary.records)
    assert sorted(r["concurrency"] for r in summary.records) == list(range(1, 9))
    assert concurrency_peak(server) >= 8
    lines = (summary.folder / "results.jsonl").read_text().splitlines()
    assert len(lines) == 8 and {json.loads(line)["tags"]["vu"] for line in lines} == set(range(8))
    # The runner kept counts, not records, while the calls ran; the records the reports get are the
    # file's, in its order, without the keys no report reads.
    stored = [json.loads(line) for line in lines]
    assert all("ground_truth" in r for r in stored)
    assert summary.records == [{k: v for k, v in r.items() if k not in UNREPORTED} for r in stored]
    written = json.loads((summary.folder / "summary.json").read_text())
    assert (written["calls"], written["passed"]) == (8, sum(r["passed"] for r in stored))


def test_open_model_starts_calls_at_the_rate_and_counts_drops(scenario_for, tmp_path):
    summary = run_scenarios(
        [scenario_for(1.5)],
        tmp_path,
        "open",
        profile=LoadProfile(arrival_rate=4, duration_s=2, max_in_flight=3),
    )
    offsets = sorted(r["tags"]["start_offset_s"] for r in summary.records)
    # Arrivals every 250 ms; with at most 3 in flight (each call lasts about 1.5 s) some are dropped.
    assert offsets[:3] == [0.0, 0.25, 0.5]
    written = json.loads((summary.folder / "summary.json").read_text())
    assert written["dropped_calls"] > 0
    assert len(summary.records) + written["dropped_calls"] == 8
    assert max(r["concurrency"] for r in summary.records) <= 3


def test_stages_ramp_concurrency_up_and_down(scenario_for, tmp_path):
    profile = LoadProfile(stages=(Stage(1.0, 4), Stage(2.0, 4)))
    summary = run_scenarios([scenario_for(1.0)], tmp_path, "stages", profile=profile)
    stages = {r["stage"] for r in summary.records}
    assert stages <= {0, 1} and 1 in stages
    assert max(r["concurrency"] for r in summary.records) == 4
    assert all(r["outcome"] in MEASURED for r in summary.records)


async def test_sleep_until_never_returns_before_the_deadline(monkeypatch) -> None:
    from uvbench.runner import fanout

    clock = [1000.0]  # a fake clock: a busy machine's late wake-ups cannot hide the early one
    wakeups = []

    async def early_sleep(delay: float) -> None:  # the first timer fires 2 ms early, as uvloop's may
        wakeups.append(delay)
        clock[0] += delay - 0.002 if len(wakeups) == 1 else delay

    # The module's names only: the event loop keeps the real clock and sleep.
    monkeypatch.setattr(fanout, "asyncio", SimpleNamespace(sleep=early_sleep))
    monkeypatch.setattr(fanout, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    deadline = clock[0] + 0.02
    await fanout.sleep_until(deadline)
    assert clock[0] >= deadline
    assert len(wakeups) >= 2  # the early wake-up slept again for the rest


def test_the_live_views_latency_window_is_bounded():
    from uvbench.runner.fanout import LIVE_TTFA_WINDOW, RunState

    state = RunState()
    turn = {"metrics": {"turn.ttfa_ms": 1.0, "turn.agent_audio_ms": 10.0}}
    for n in range(LIVE_TTFA_WINDOW + 50):
        turn["metrics"]["turn.ttfa_ms"] = float(n)
        state.record({"outcome": "completed", "turns": [turn], "metrics": {}})
    # A soak's turns do not grow it: the last LIVE_TTFA_WINDOW are kept, the counts are all there.
    assert len(state.ttfa_ms) == LIVE_TTFA_WINDOW and state.ttfa_ms[0] == 50.0
    assert state.outcomes == {"completed": LIVE_TTFA_WINDOW + 50}
