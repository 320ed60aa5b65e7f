"""Step mode (knee finding): the stepping logic on a fake clock and synthetic records, then one short
real run (in one process and with two workers) checking summary.json's `knee` object."""

from __future__ import annotations

import json

import pytest

from tests.short_scenario import write_short_scenario
from tests.test_aggregate import record, turn
from uvbench.cli import main
from uvbench.metrics.thresholds import parse_thresholds
from uvbench.runner.step import StepError, Stepper, StepPlan

TTFA_P95 = parse_thresholds({"turn.ttfa_ms": ["p(95) < 1000"]})


def call(ttfa: float = 500.0, outcome: str = "completed") -> dict:
    return record(outcome, turns=[turn(0, ttfa)])


def run_level(stepper: Stepper, level: int, records: list[dict]) -> None:
    """Start and end calls at `level`, then close it (its hold over, no more starts)."""
    stepper.started(level, len(records))
    for r in records:
        stepper.ended(level, r)
    stepper.close(level)


def test_plan_parses_and_lists_levels():
    plan = StepPlan.parse("10:10:300:30s")
    assert (plan.start, plan.step, plan.max, plan.hold_s) == (10, 10, 300, 30)
    assert plan.levels[:3] == (10, 20, 30) and plan.levels[-1] == 300 and len(plan.levels) == 30
    assert StepPlan.parse("1:2:6:1m").levels == (1, 3, 5) and StepPlan.parse("1:2:6:1m").total_s == 180
    for bad in ("10:10:300", "a:1:2:3s", "1:1:2:soon"):
        with pytest.raises(StepError, match="START:STEP:MAX:HOLD"):
            StepPlan.parse(bad)
    with pytest.raises(StepError, match="MAX >= START"):
        StepPlan.parse("10:10:5:30s")
    with pytest.raises(StepError, match="at least 1s"):
        StepPlan.parse("1:1:5:200ms")


def test_level_clock_moves_every_hold_and_stops_after_the_last():
    stepper = Stepper(StepPlan(10, 10, 30, 30))
    assert [stepper.level_at(t) for t in (0, 29.9, 30, 61, 89.9, 90)] == [10, 10, 20, 30, 30, None]


def test_holds_then_breaks_at_level_k_and_reports_the_level_before():
    stepper = Stepper(StepPlan(10, 10, 50, 30), TTFA_P95)
    run_level(stepper, 10, [call(400)] * 5)
    run_level(stepper, 20, [call(700)] * 5)
    assert stepper.broke is None and stepper.held.concurrency == 20
    run_level(stepper, 30, [call(600)] * 4 + [call(2500)])  # p(95) above 1000 ms
    assert stepper.broke.concurrency == 30
    assert stepper.level_at(95) is None  # no call starts after a break, whatever the clock says
    knee = stepper.knee()
    assert (knee["held"], knee["broke"]) == (20, 30)
    assert [(lv["concurrency"], lv["verdict"]) for lv in knee["levels"]] == [
        (10, "held"),
        (20, "held"),
        (30, "broke"),
    ]
    assert knee["summary"].startswith(
        "knee: 20 concurrent calls held (level 30 broke: ✗ turn.ttfa_ms p(95) < 1000"
    )
    assert knee["levels"][2]["thresholds"][0]["passed"] is False


def test_an_invalid_call_breaks_a_level_even_when_thresholds_pass():
    stepper = Stepper(StepPlan(5, 5, 20, 10), TTFA_P95)
    run_level(stepper, 5, [call()] * 3)
    run_level(stepper, 10, [call()] * 3 + [call(outcome="invalid:generator_overloaded")])
    assert stepper.summary() == (
        "knee: 5 concurrent calls held (level 10 broke: "
        "1 invalid call of 4 (invalid:generator_overloaded x1))"
    )


def test_without_thresholds_a_failed_call_breaks_and_the_first_level_may_already_break():
    stepper = Stepper(StepPlan(2, 2, 6, 10))
    run_level(stepper, 2, [call(), call(outcome="failed:connect")])
    assert stepper.held is None and stepper.broke.concurrency == 2
    assert stepper.summary().startswith("knee: not found: the first level (2 concurrent calls) already broke")
    with_thresholds = Stepper(StepPlan(2, 2, 6, 10), TTFA_P95)  # failed calls only count through them
    run_level(with_thresholds, 2, [call(), call(outcome="failed:connect")])
    assert with_thresholds.broke is None


def test_a_level_waits_for_its_calls_and_for_the_levels_below():
    stepper = Stepper(StepPlan(1, 1, 3, 10))
    stepper.started(1, 2)
    stepper.ended(1, call())
    stepper.started(2, 1)
    stepper.ended(2, call())
    stepper.close(1)
    stepper.close(2)
    levels = stepper.knee()["levels"]
    assert [lv["verdict"] for lv in levels] == ["not judged", "not judged"]  # level 1 has one in flight
    stepper.ended(1, None)  # it left no record (it raised, or its worker died): lost
    assert stepper.broke.concurrency == 1 and "1 call ended without a record" in stepper.summary()


def test_every_level_held():
    stepper = Stepper(StepPlan(1, 1, 2, 5))
    run_level(stepper, 1, [call()])
    run_level(stepper, 2, [call(), call()])
    assert stepper.summary() == (
        "knee: not reached: every level held, up to 2 concurrent calls (raise MAX to go further)"
    )
    interrupted = Stepper(StepPlan(1, 1, 3, 5))
    run_level(interrupted, 1, [call()])
    interrupted.started(2)
    assert interrupted.summary(interrupted=True) == (
        "knee: not found: at least 1 concurrent calls held (level 2 not judged: the run was interrupted)"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_short_step_run_writes_the_knee(tmp_path, capsys, workers):
    scenario = write_short_scenario(tmp_path, "stepper")
    out = tmp_path / "out"
    code = main(
        ["run", str(scenario), "--step", "1:1:2:3s", "--workers", str(workers), "--out", str(out), "-q"]
    )
    stdout = capsys.readouterr().out
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    knee = summary["knee"]
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert knee["plan"] == {"start": 1, "step": 1, "max": 2, "hold_s": 3.0}
    assert knee["summary"] in stdout
    levels = {lv["concurrency"]: lv for lv in knee["levels"]}
    # level 2 is tried exactly when level 1 held
    assert list(levels) == ([1, 2] if levels[1]["verdict"] == "held" else [1])
    for level, entry in levels.items():  # every started call ended and is in the run folder
        tagged = [r for r in records if r["tags"]["step"] == level]
        assert entry["calls"] == entry["finished"] == len(tagged) >= 1
    assert summary["calls"] == len(records) == sum(lv["calls"] for lv in levels.values())
    assert max(r["concurrency"] for r in records) <= 2
    held = [c for c, lv in levels.items() if lv["verdict"] == "held"]
    broke = [c for c, lv in levels.items() if lv["verdict"] == "broke"]
    # A level holds unless a call was invalid or failed; verdicts agree with the records.
    for level, entry in levels.items():
        bad = [r for r in records if r["tags"]["step"] == level and r["outcome"] != "completed"]
        assert (entry["verdict"] == "broke") == bool(bad), (level, entry)
    assert knee["held"] == (max(held) if held else None) and knee["broke"] == (min(broke) if broke else None)
    assert code == (0 if held else 1)
    if workers == 2:
        assert {r["tags"]["worker"] for r in records} == {0, 1}
