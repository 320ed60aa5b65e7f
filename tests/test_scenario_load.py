"""`load:` and `thresholds:` in scenario files: k6's executors and shortcuts become the right
LoadProfile, every mistake is one file:line:col line, CLI flags override the file as in k6, and
the runner honours what the new executors need (ramping arrival rate, start VUs, per-VU
iterations, graceful stops)."""

from __future__ import annotations

import asyncio
import re
import textwrap
import time

import pytest

from uvbench.cli import main
from uvbench.metrics.thresholds import evaluate
from uvbench.runner.fanout import RunState, run_load
from uvbench.runner.load import LoadProfile, Stage
from uvbench.scenario import ScenarioError, load_scenarios, parse_scenarios
from uvbench.scenario.load_config import (
    CliLoad,
    LoadConfigError,
    apply_cli,
    format_duration,
    parsed_thresholds,
)
from uvbench.scenario.plan import plan_run

BASE = "name: x\nscript: [hang_up]\n"


def spec_of(extra: str):
    (scenario,) = parse_scenarios(BASE + textwrap.dedent(extra), source="x.yaml")
    return scenario.load_spec


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # canonical executors
        (
            "load: {executor: constant-vus, vus: 5, duration: 2m}",
            LoadProfile(concurrency=5, duration_s=120),
        ),
        (
            """
            load:
              executor: ramping-vus
              startVUs: 0
              stages: [{duration: 30s, target: 20}, {duration: 1m, target: 20}, {duration: 10s, target: 0}]
              gracefulRampDown: 5s
            """,
            LoadProfile(
                stages=(Stage(30, 20), Stage(60, 20), Stage(10, 0)), start_vus=0, graceful_ramp_down_s=5
            ),
        ),
        (
            "load: {executor: constant-arrival-rate, rate: 30, timeUnit: 1m, duration: 10m,"
            " preAllocatedVUs: 20}",
            LoadProfile(arrival_rate=0.5, duration_s=600, max_in_flight=20, time_unit_s=60),
        ),
        (
            """
            load:
              executor: ramping-arrival-rate
              startRate: 2
              timeUnit: 1m
              stages: [{duration: 2m, target: 30}, {duration: 10m, target: 30}]
              preAllocatedVUs: 20
              maxVUs: 100
              gracefulStop: 45s
            """,
            LoadProfile(
                rate_stages=(Stage(120, 30), Stage(600, 30)),
                start_rate=2,
                time_unit_s=60,
                max_in_flight=100,
                graceful_stop_s=45,
            ),
        ),
        (
            "load: {executor: shared-iterations, vus: 4, iterations: 20, maxDuration: 5m}",
            LoadProfile(concurrency=4, iterations=20, duration_s=300),
        ),
        (
            "load: {executor: per-vu-iterations, vus: 3, iterations: 2}",
            LoadProfile(concurrency=3, iterations=6, iterations_per_vu=2),
        ),
        # k6's shortcuts, derived as k6 derives them
        ("vus: 10\nduration: 5m", LoadProfile(concurrency=10, duration_s=300)),
        ("duration: 30s", LoadProfile(concurrency=1, duration_s=30)),
        (
            "stages: [{duration: 10s, target: 4}, {duration: 5s, target: 0}]",
            LoadProfile(stages=(Stage(10, 4), Stage(5, 0)), start_vus=1),
        ),
        (
            "vus: 0\nstages: [{duration: 10s, target: 4}]",
            LoadProfile(stages=(Stage(10, 4),), start_vus=0),
        ),
        ("iterations: 12\nvus: 3", LoadProfile(concurrency=3, iterations=12)),
        ("iterations: 12\nduration: 1m", LoadProfile(concurrency=1, iterations=12, duration_s=60)),
        # vus alone: each scenario --repeat times (here 1 scenario x repeat 3)
        ("vus: 2", LoadProfile(concurrency=2, iterations=3)),
    ],
)
def test_each_executor_and_shortcut_becomes_its_profile(extra, expected):
    spec = spec_of(extra)
    assert spec.profile(scenarios=1, repeat=3) == expected


def test_the_expanded_load_is_k6s_form_with_defaults_filled_in():
    spec = spec_of(
        "load: {executor: constant-arrival-rate, rate: 30, timeUnit: 1m, duration: 90s, preAllocatedVUs: 5}"
    )
    assert spec.resolved().expanded() == {
        "executor": "constant-arrival-rate",
        "timeUnit": "1m",
        "preAllocatedVUs": 5,
        "maxVUs": 5,
        "rate": 30,
        "duration": "1m30s",
        "iterations": None,
        "gracefulStop": None,
    }
    assert spec_of("vus: 3").resolved(scenarios=2, repeat=2).expanded()["iterations"] == 4
    assert spec_of("stages: [{duration: 1m30s, target: 5}]").text() == (
        "{executor: ramping-vus, startVUs: 1, stages: [{duration: 1m30s, target: 5}],"
        " gracefulRampDown: null, gracefulStop: null}"
    )
    assert [format_duration(s) for s in (0.25, 1, 60, 90, 3600, 3661.5)] == [
        "250ms", "1s", "1m", "1m30s", "1h", "1h1m1.5s",
    ]  # fmt: skip
    assert spec_of("") is None


def test_a_matrix_does_not_sweep_the_load_and_every_variant_shares_it():
    (a, b) = parse_scenarios(BASE + "matrix: {client.honor_clear: [true, false]}\nvus: 2\nduration: 10s\n")
    assert a.load_spec == b.load_spec and a.load_spec.vus == 2
    with pytest.raises(ScenarioError, match="no such setting"):
        parse_scenarios(BASE + "matrix: {vus: [1, 2]}\n", source="m.yaml")


# ------------------------------------------------------------------------------------------------
# Every problem: one line, at its line and column


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "load:\n  executor: constant-vus\n  vsu: 3\n  duration: 10s\n",
            r'^x\.yaml:5:3: load\.vsu: unknown key \(did you mean "vus"\?\)$',
        ),
        (
            "load:\n  executor: constant-vus\n  duration: 10x\n",
            r'^x\.yaml:5:13: load\.duration: "10x" is not a duration \(expected e\.g\. "1\.5s"',
        ),
        (
            "load: {executor: ramping-arival-rate, stages: [{duration: 1s, target: 1}]}\n",
            r'^x\.yaml:3:18: load\.executor: unknown executor "ramping-arival-rate" \(did you mean'
            r' "ramping-arrival-rate"\?\)$',
        ),
        (
            "load: {executor: externally-controlled}\n",
            r"^x\.yaml:3:18: load\.executor: unknown executor .*uvbench has no control API; supported:",
        ),
        (
            "load: {vus: 3, duration: 1m}\n",
            r'^x\.yaml:3:1: load: missing key "executor" \(expected one of: constant-vus, .*k6\'s shortcuts'
            r" \(vus, duration\) go at the top level, without load:\)$",
        ),
        (
            "load:\n  executor: ramping-vus\n  stages:\n    - {duration: 0s, target: 3}\n",
            r"^x\.yaml:6:18: load\.stages\[0\]\.duration: 0s is not a positive duration",
        ),
        (
            "load:\n  executor: constant-vus\n  duration: 1m\n  startTime: 5s\n",
            r"^x\.yaml:6:3: load\.startTime: unknown key \(startTime belongs to a suite entry, next to file:",
        ),
        (
            "load: {executor: constant-arrival-rate, rate: 1, preAllocatedVUs: 2}\n",
            r'^x\.yaml:3:1: load: missing key "duration" \(required: how long calls keep arriving\)$',
        ),
        (
            "load: {executor: constant-arrival-rate, rate: 2000, duration: 1m}\n",
            r"^x\.yaml:3:\d+: load\.rate: rate 2000 per 1s is 2000 calls a second, above uvbench's"
            r" limit of 1000$",
        ),
        (
            "load: {executor: constant-arrival-rate, rate: .inf, duration: 1m}\n",
            r"^x\.yaml:3:\d+: load\.rate: ",
        ),
        (
            "load: {executor: ramping-arrival-rate, stages: [{duration: 1m, target: 90000}], timeUnit: 1m}\n",
            r"^x\.yaml:3:\d+: load\.stages: the rate peaks at 1500 calls a second, above uvbench's limit",
        ),
        (
            "vus: 3\nload: {executor: constant-vus, duration: 1m}\n",
            r"^x\.yaml:3:6: vus: a k6 shortcut next to load: \(expected either load:",
        ),
        (
            "duration: 1m\nstages: [{duration: 10s, target: 2}]\n",
            r"^x\.yaml:3:11: duration: duration and stages both set \(expected one of them",
        ),
        (
            "thresholds:\n  turn.ttfa: ['p(95) < 1200']\n",
            r"^x\.yaml:4:3: thresholds\[\"turn\.ttfa\"\]: unknown metric \(did you mean turn\.ttfa_ms\?\)$",
        ),
        (
            "thresholds:\n  call.failed: ['rate < 0.01', 'p(95) < 3']\n",
            r'^x\.yaml:4:32: thresholds\["call\.failed"\]\[1\]: "p\(95\) < 3": p\(95\) does not apply to'
            r" call\.failed \(use rate, value, count\)$",
        ),
        (
            "thresholds:\n  turn.ttfa_ms:\n    - 'p(101) < 3'\n",
            r'^x\.yaml:5:7: thresholds\["turn\.ttfa_ms"\]\[0\]: "p\(101\) < 3": percentile 101 is'
            r" outside 0\.\.100$",
        ),
        (
            "thresholds:\n  'turn.ttfa_ms{scenari:a}': ['p(95) < 3']\n",
            r'^x\.yaml:4:3: thresholds\["turn\.ttfa_ms\{scenari:a\}"\]: unknown tag "scenari"',
        ),
        (
            "thresholds:\n  call.join_ms: [{threshold: 'p(95) < 800', abortOnFial: true}]\n",
            r'^x\.yaml:4:18: thresholds\["call\.join_ms"\]\[0\]: unknown key "abortOnFial" in long form',
        ),
        (
            "thresholds:\n  call.success_pct: > 99\n",
            r"^x\.yaml:4:23: invalid YAML: .*a value starting with > or \| is a block scalar: quote it",
        ),
    ],
)
def test_each_bad_input_is_one_line_at_its_line_and_column(tmp_path, extra, expected):
    path = tmp_path / "x.yaml"
    path.write_text(BASE + extra)
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    problems = [p.removeprefix(str(tmp_path) + "/") for p in info.value.problems]
    assert len(problems) == 1, problems
    assert re.search(expected, problems[0]), problems[0]


def test_problems_of_load_and_of_the_rest_are_reported_together(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(
        "name: x\nscript: [hang_up, {wiat_for: agent_done}]\nvus: 2\n"
        "load: {executor: constant-vus, duraton: 1m}\n"
    )
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 4, text
    assert "x.yaml:2:20: script[1].wiat_for: unknown step kind" in text
    assert "x.yaml:3:6: vus: a k6 shortcut next to load:" in text
    assert 'x.yaml:4:1: load: missing key "duration"' in text
    assert 'x.yaml:4:32: load.duraton: unknown key (did you mean "duration"?)' in text


def test_the_file_thresholds_gate_the_records():
    (scenario,) = parse_scenarios(
        BASE + "thresholds: {turn.ttfa_ms: ['p(95) < 1000'], 'call.failed': 'rate < 0.5'}\n"
    )
    parsed = [f"{t.key} {t.expression}" for t in parsed_thresholds(scenario.thresholds)]
    assert parsed == ["turn.ttfa_ms p(95) < 1000", "call.failed rate < 0.5"]


# ------------------------------------------------------------------------------------------------
# CLI > file


def test_cli_flags_override_the_file_as_k6_merges_its_tiers():
    constant = spec_of("vus: 10\nduration: 5m")
    # --duration (or --iterations, --stage, --arrival-rate) replaces the load; vus carries over
    assert apply_cli(constant, CliLoad(duration=30)).profile() == LoadProfile(concurrency=10, duration_s=30)
    assert apply_cli(constant, CliLoad(iterations=20)).profile() == LoadProfile(concurrency=10, iterations=20)
    assert apply_cli(constant, CliLoad(stages=((10, 4),))).profile() == LoadProfile(
        stages=(Stage(10, 4),), start_vus=10
    )
    assert apply_cli(constant, CliLoad(vus=2, duration=30)).profile() == LoadProfile(
        concurrency=2, duration_s=30
    )
    # --vus alone changes the file's vus and keeps the rest
    assert apply_cli(constant, CliLoad(vus=3)).profile() == LoadProfile(concurrency=3, duration_s=300)
    arrival = spec_of(
        "load: {executor: ramping-arrival-rate, stages: [{duration: 1m, target: 6}], preAllocatedVUs: 4}"
    )
    assert apply_cli(arrival, CliLoad(max_in_flight=2)).profile().max_in_flight == 2
    # --arrival-rate replaces it with constant-arrival-rate, the file's cap kept
    replaced = apply_cli(arrival, CliLoad(arrival_rate=2, duration=10))
    assert replaced.profile() == LoadProfile(arrival_rate=2, duration_s=10, max_in_flight=4)
    # no file load: the flags alone; nothing: each scenario --repeat times, one at a time
    assert apply_cli(None, CliLoad()).profile(scenarios=2, repeat=2) == LoadProfile(
        concurrency=1, iterations=4
    )
    assert apply_cli(None, CliLoad(vus=3)).profile(scenarios=2) == LoadProfile(concurrency=3, iterations=2)


@pytest.mark.parametrize(
    ("file", "cli", "message"),
    [
        (
            "stages: [{duration: 1m, target: 5}]",
            CliLoad(vus=3),
            "--vus does not apply to the file's ramping-vus load",
        ),
        ("vus: 3\nduration: 1m", CliLoad(max_in_flight=3), "--max-in-flight applies to an arrival-rate load"),
        ("", CliLoad(max_in_flight=3), "--max-in-flight applies to the open model"),
        ("", CliLoad(stages=((1, 1),), duration=5), "--stage sets the load's length"),
        ("", CliLoad(arrival_rate=2), "--arrival-rate needs --duration"),
        ("", CliLoad(arrival_rate=2, duration=5, vus=3), "--vus does not apply to an arrival rate"),
        ("", CliLoad(vus=0), "--vus must be at least 1"),
    ],
)
def test_flags_that_cannot_apply_are_one_line(file, cli, message):
    with pytest.raises(LoadConfigError, match=re.escape(message)):
        apply_cli(spec_of(file), cli)


def test_uvbench_run_reads_the_file_load_and_the_flags_override_it(tmp_path, capsys):
    path = tmp_path / "x.yaml"
    path.write_text(BASE + "load: {executor: ramping-vus, stages: [{duration: 1m, target: 5}]}\n")
    plan = plan_run(path, CliLoad())
    assert plan.load_json["executor"] == "ramping-vus" and plan.profile.stages == (Stage(60, 5),)
    plan = plan_run(path, CliLoad(iterations=4, vus=2))
    assert plan.load_json == {
        "executor": "shared-iterations", "vus": 2, "iterations": 4, "maxDuration": None, "gracefulStop": None,
    }  # fmt: skip
    assert plan.header() == [
        "load: {executor: shared-iterations, vus: 2, iterations: 4, maxDuration: null, gracefulStop: null}"
    ]
    # a flag that cannot apply to the file's load: exit 2, one line, no run folder
    assert main(["run", str(path), "--vus", "3", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "uvbench: error: --vus does not apply to the file's ramping-vus load (set its levels with --stage)"
    ]
    assert not (tmp_path / "out").exists()


def test_a_folder_runs_one_load_and_the_union_of_its_files_thresholds(tmp_path):
    (tmp_path / "a.yaml").write_text(
        BASE.replace("x", "a") + "vus: 2\nthresholds: {turn.ttfa_ms: ['p(95) < 9']}\n"
    )
    (tmp_path / "b.yaml").write_text(BASE.replace("x", "b") + "thresholds: {call.failed: ['rate < 0.1']}\n")
    plan = plan_run(tmp_path, CliLoad())
    assert plan.profile == LoadProfile(concurrency=2, iterations=2)
    assert [t.key for t in plan.thresholds] == ["turn.ttfa_ms", "call.failed"]
    (tmp_path / "b.yaml").write_text(BASE.replace("x", "b") + "vus: 3\n")
    with pytest.raises(LoadConfigError, match="set different loads"):
        plan_run(tmp_path, CliLoad())
    records = [
        {
            "scenario": "a",
            "outcome": "completed",
            "metrics": {},
            "turns": [{"metrics": {"turn.ttfa_ms": 50.0}}],
        }
    ]
    assert [r.passed for r in evaluate(plan_run(tmp_path / "a.yaml").thresholds, records)] == [False]


# ------------------------------------------------------------------------------------------------
# The profile and the runner honour the executors


def test_ramping_arrival_rate_spaces_arrivals_by_the_integral_of_the_rate():
    ramp = LoadProfile(rate_stages=(Stage(10, 10),))  # 0 -> 10 calls/s over 10 s: 50 calls
    assert [round(ramp.arrival_s(k), 3) for k in (0, 2, 8, 18, 32, 50)] == [0, 2, 4, 6, 8, 10]
    assert ramp.arrival_s(51) == float("inf") and ramp.finished(ramp.arrival_s(51), 51)
    held = LoadProfile(rate_stages=(Stage(60, 30), Stage(60, 30)), start_rate=30, time_unit_s=60)
    assert [held.arrival_s(k) for k in (0, 1, 30, 59)] == [0, 2, 60, 118]
    assert held.stage_at(61) == 1 and held.total_duration_s == 120 and held.open_model
    down = LoadProfile(rate_stages=(Stage(4, 0),), start_rate=4)  # 4 -> 0 calls/s: 8 calls
    assert down.arrival_s(8) == pytest.approx(4) and down.arrival_s(9) == float("inf")
    assert round(down.arrival_s(6), 3) == 2.0  # 4t - t^2/2 = 6


def test_start_vus_is_the_first_stages_starting_level():
    profile = LoadProfile(stages=(Stage(10, 10),), start_vus=4)
    assert [profile.target_at(t) for t in (0, 5, 10)] == [4, 7, 10]


async def fake_load(profile: LoadProfile, seconds: float = 0.2, **kwargs):
    """run_load with calls that just sleep; returns (tags of finished calls, state)."""
    finished: list[dict] = []

    async def run_one(scenario, tags):
        await asyncio.sleep(seconds)
        finished.append(tags)
        return {"outcome": "completed"}

    state = await run_load(["s"], profile, run_one, state=RunState(), **kwargs)
    return finished, state


async def test_per_vu_iterations_give_each_vu_exactly_its_calls():
    spec = spec_of("load: {executor: per-vu-iterations, vus: 3, iterations: 2}")
    finished, _ = await fake_load(spec.profile(), 0.05)
    assert sorted(t["vu"] for t in finished) == [0, 0, 1, 1, 2, 2]


async def test_graceful_stop_cancels_the_calls_still_running_and_counts_them():
    profile = spec_of("load: {executor: constant-vus, vus: 2, duration: 0.3s, gracefulStop: 0.2s}").profile()
    t0 = time.monotonic()
    finished, state = await fake_load(profile, 5.0)
    assert finished == [] and state.interrupted == 2 and state.in_flight == 0
    assert time.monotonic() - t0 < 1.5
    unset = spec_of("load: {executor: constant-vus, vus: 2, duration: 0.1s}").profile()
    finished, state = await fake_load(unset, 0.4)  # without gracefulStop every call finishes
    assert len(finished) == 2 and state.interrupted == 0


async def test_graceful_ramp_down_cancels_the_calls_of_the_vus_it_took_away():
    stages = "[{duration: 0.2s, target: 3}, {duration: 0.01s, target: 1}, {duration: 0.6s, target: 1}]"
    profile = spec_of(
        f"load: {{executor: ramping-vus, startVUs: 3, stages: {stages}, gracefulRampDown: 0.1s}}"
    ).profile()
    finished, state = await fake_load(profile, 1.2)
    assert state.interrupted == 2  # VUs 1 and 2 left at the ramp-down; VU 0 ran on to the end
    assert [t["vu"] for t in finished] == [0]
