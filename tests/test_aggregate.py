"""Aggregates over hand-built call records (the shape of `results.jsonl`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uvbench.metrics.aggregate import (
    RATES,
    UNDERFLOW_MIN_AUDIO_S,
    Rate,
    Stats,
    TurnFigures,
    aggregate,
    percentile,
    turn_label,
)


def turn(
    index: int,
    ttfa: float | None = 500.0,
    *,
    missed: bool = False,
    audio: float = 3000.0,
    uf: int = 0,
    step: int | None = None,
    name: str | None = None,
):
    """A turn of script step `step` (default: its index), named `name` (the step's `name:`)."""
    metrics = {"turn.ttfa_ms": None if missed else ttfa, "turn.agent_audio_ms": 0 if missed else audio}
    metrics["turn.underflow_count"] = uf
    step = index if step is None else step
    return {"index": index, "step": step, "name": name, "missed": missed, "metrics": metrics}


def barge_in(index: int, step: int, clear: float | None, *, name: str | None = None, missed: bool = False):
    return {
        "index": index,
        "step": step,
        "name": name,
        "success": clear is not None,
        "missed": missed,
        "metrics": {"interrupt.clear_ms": clear},
    }


def record(
    outcome: str = "completed",
    *,
    scenario: str = "booking",
    turns: list[dict[str, Any]] | None = None,
    barge_ins: list[dict[str, Any]] | None = None,
    underflows: int = 0,
    agent_audio_ms: float | None = None,
    expectations: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A call record; without `agent_audio_ms` it is one of a run from before
    `call.agent_audio_ms` was measured."""
    metrics: dict[str, Any] = {
        "call.join_ms": 100.0,
        "call.underflow_count": underflows,
        "call.outcome": outcome,
        "call.end_reason": "hangup",
    }
    if agent_audio_ms is not None:
        metrics["call.agent_audio_ms"] = agent_audio_ms
    return {
        "scenario": scenario,
        "outcome": outcome,
        "passed": outcome == "completed",
        "metrics": metrics,
        "turns": turns if turns is not None else [turn(0)],
        "barge_ins": barge_ins or [],
        "underflows": [],
        "expectations": expectations or [],
        **extra,
    }


def test_stats_linear_interpolation() -> None:
    s = Stats.of([1, 2, 3, 4])
    assert (s.count, s.mean, s.min, s.max) == (4, 2.5, 1, 4)
    assert s.p50 == 2.5
    assert s.p90 == pytest.approx(3.7)
    assert s.p99 == pytest.approx(3.97)
    assert s.percentile(0) == 1 and s.percentile(100) == 4
    assert Stats.of([7]).p99 == 7


def test_stats_empty_and_skips_non_numbers() -> None:
    assert Stats.of([]) == Stats(count=0)
    assert Stats.of([]).to_json() == {k: None for k in Stats(0).to_json()} | {"count": 0}
    assert Stats.of([None, "x", True, float("nan"), 3]).count == 1


def test_percentile_out_of_range() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@given(st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=1, max_size=60))
def test_stats_percentiles_monotonic_and_bounded(values: list[float]) -> None:
    s = Stats.of(values)
    assert s.min is not None and s.max is not None
    assert s.min <= s.p50 <= s.p90 <= s.p95 <= s.p99 <= s.max  # type: ignore[operator]
    assert s.min <= s.mean <= s.max  # type: ignore[operator]
    assert s.min == min(values) and s.max == max(values)


def test_levels_of_metrics() -> None:
    records = [
        record(turns=[turn(0, 400), turn(1, 600), turn(2, missed=True)], underflows=1),
        record(
            turns=[turn(0, 800)],
            barge_ins=[
                {"index": 0, "success": True, "missed": False, "metrics": {"interrupt.clear_ms": 50.0}},
                {"index": 1, "success": False, "missed": False, "metrics": {"interrupt.clear_ms": None}},
                {"index": 2, "success": None, "missed": True, "metrics": {"interrupt.clear_ms": None}},
            ],
        ),
    ]
    agg = aggregate(records)
    assert agg.metrics["call.join_ms"].count == 2  # one per call
    assert agg.metrics["turn.ttfa_ms"].count == 3  # one per non-missed turn
    assert agg.metrics["turn.ttfa_ms"].values == (400, 600, 800)
    assert agg.metrics["turn.agent_audio_ms"].count == 3  # the missed turn's 0 is not a sample
    assert agg.metrics["interrupt.clear_ms"].count == 1
    assert "call.outcome" not in agg.metrics and "call.end_reason" not in agg.metrics
    assert agg.rates["turn.miss_rate"] == Rate(1, 4)
    assert agg.rate("interrupt.success_rate") == 0.5  # the unjudged barge-in is left out
    assert agg.rate("call.any_underflow_rate") == 0.5


def test_counters_rates_and_invalid_apart() -> None:
    records = [
        record(turns=[turn(0, 500)]),
        record(turns=[turn(0, 700)]),
        record("failed:missed_turn", turns=[turn(0, missed=True)]),
        record("failed:connect", turns=[]),
        record("invalid:generator_overloaded", turns=[turn(0, 99999)]),
    ]
    agg = aggregate(records)
    assert (agg.calls, agg.valid, agg.invalid, agg.completed) == (5, 4, 1, 2)
    assert agg.failed == {"missed_turn": 1, "connect": 1}
    assert agg.rate("call.success_rate") == 0.5
    assert agg.rate("call.failed_rate") == 0.5
    assert agg.rate("turn.miss_rate") == pytest.approx(1 / 3)
    assert agg.metrics["turn.ttfa_ms"].max == 700  # the invalid call's 99999 never mixes in
    assert agg.invalid_reasons == {"generator_overloaded": 1}
    assert agg.invalid_metrics["turn.ttfa_ms"].values == (99999,)
    assert agg.warning == (
        "1 of 5 calls were invalid (generator overloaded): their figures are reported apart"
    )


def test_calls_with_malformed_server_messages_are_a_rate() -> None:
    records = [record(), record(), record(), record(turns=[])]
    records[0]["metrics"]["call.malformed_count"] = 2
    records[1]["metrics"]["call.malformed_count"] = 0
    agg = aggregate(records)
    assert agg.rates["call.malformed_rate"].to_json() == {"value": 0.5, "numerator": 1, "denominator": 2}
    assert agg.metrics["call.malformed_count"].max == 2


def test_warning_only_above_ten_percent() -> None:
    records = [record() for _ in range(9)] + [record("invalid:generator_overloaded")]
    assert aggregate(records).warning is None
    assert aggregate(records[1:]).warning is not None
    assert aggregate([]).warning is None


def test_underflow_per_minute_of_all_agent_audio() -> None:
    records = [
        # the call's underflows and audio, greeting included, not the turns' own
        record(
            turns=[turn(0, audio=30_000, uf=2), turn(1, audio=30_000, uf=1)],
            underflows=5,
            agent_audio_ms=80_000,
        ),
        record(turns=[turn(0, audio=60_000, uf=0)], underflows=1, agent_audio_ms=100_000),
        # a call of a run from before call.agent_audio_ms: in neither numerator nor denominator
        record(turns=[turn(0, audio=60_000, uf=9)], underflows=9),
        record("invalid:generator_overloaded", underflows=50, agent_audio_ms=60_000),
    ]
    rate = aggregate(records).rates["audio.underflow_per_min"]
    assert (rate.numerator, rate.denominator) == (6, 3.0)
    assert rate.value == 2.0
    assert rate.to_json() == {"value": 2.0, "numerator": 6, "denominator": 3.0}
    assert aggregate([record(turns=[])]).rate("audio.underflow_per_min") is None
    assert aggregate([record(underflows=3)]).rates["audio.underflow_per_min"].denominator == 0


def test_underflow_rate_needs_ten_seconds_of_audio() -> None:
    assert UNDERFLOW_MIN_AUDIO_S == 10
    # 4 underflows in 1.57 s of audio would read 153/min: too little audio to say
    short = aggregate([record(underflows=4, agent_audio_ms=1_570)]).rates["audio.underflow_per_min"]
    assert short.value is None
    assert (short.numerator, short.denominator) == (4, pytest.approx(1_570 / 60_000))  # what it is based on
    assert short.to_json()["value"] is None
    # 9.99 s over two calls is still too little; 10 s is enough
    almost = [record(underflows=1, agent_audio_ms=4_995), record(underflows=1, agent_audio_ms=4_995)]
    assert aggregate(almost).rate("audio.underflow_per_min") is None
    enough = [record(underflows=1, agent_audio_ms=5_000), record(underflows=1, agent_audio_ms=5_000)]
    assert aggregate(enough).rate("audio.underflow_per_min") == pytest.approx(12.0)
    assert Rate(1, 0.5, min_denominator=1).value is None and Rate(1, 2, min_denominator=1).value == 0.5


def test_expect_passed_rate_over_calls_with_expectations() -> None:
    ok, bad = (
        {"step": 1, "ok": True, "what": "w", "detail": ""},
        {"step": 2, "ok": False, "what": "w", "detail": ""},
    )
    records = [
        record(expectations=[ok, ok]),
        record("failed:expect", expectations=[ok, bad]),
        record(),  # no expectations: not counted
    ]
    assert aggregate(records).rates["expect.passed_rate"] == Rate(1, 2)


def test_grouping_by_key_and_callable() -> None:
    records = [
        record(scenario="a", concurrency=50, turns=[turn(0, 900)]),
        record(scenario="b", concurrency=10, turns=[turn(0, 300)]),
        record(scenario="a", concurrency=10, turns=[turn(0, 500)]),
    ]
    by_scenario = aggregate(records, by="scenario")
    assert list(by_scenario.groups) == ["a", "b"]
    assert by_scenario.groups["a"].metrics["turn.ttfa_ms"].values == (500, 900)
    assert by_scenario.overall.calls == 3
    by_level = aggregate(records, by=lambda r: r["concurrency"])
    assert list(by_level.groups) == [10, 50]  # sorted: latency against concurrency
    assert by_level.groups[10].metrics["turn.ttfa_ms"].mean == 400
    stages = aggregate([record(tags={"stage": 2}), record()], by="stage")
    assert list(stages.groups) == [2, None]


def test_to_json_round_trips_through_json() -> None:
    agg = aggregate([record(stage=1), record("invalid:generator_overloaded", stage=2)], by="stage")
    data = json.loads(json.dumps(agg.to_json()))
    assert data["warning"].startswith("1 of 2 calls were invalid")
    assert data["rates"]["call.success_rate"] == {"value": 1.0, "numerator": 1, "denominator": 1}
    assert data["metrics"]["turn.ttfa_ms"]["p95"] == 500
    assert set(data["groups"]) == {"1", "2"}
    assert data["groups"]["2"]["valid"] == 0
    assert data["groups"]["2"]["rates"]["call.success_rate"]["value"] is None
    assert set(data["rates"]) == set(RATES)


def apart(index: int, reason: str, **figures: float) -> dict[str, Any]:
    """A turn whose `figures` (name without "turn.") were set apart for `reason`."""
    t = turn(index, None)
    del t["metrics"]["turn.ttfa_ms"]
    t["set_apart"] = {f"turn.{k}": {"value": v, "reason": reason} for k, v in figures.items()}
    return t


def test_set_apart_figures_are_counted_per_metric_and_reason_not_aggregated() -> None:
    records = [
        record(turns=[turn(0, 500), apart(1, "anchor_late", ttfa_ms=90_000.0, ttfb_ms=80_000.0)]),
        record(
            turns=[apart(0, "loop_lag", ttfa_ms=70_000.0), turn(1, 600)],
            set_apart={"call.join_ms": {"value": 5000.0, "reason": "loop_lag"}},
        ),
        # An invalid call's own set-apart figures are described with the invalid calls, not here.
        record("invalid:generator_overloaded", turns=[apart(0, "anchor_late", ttfa_ms=1.0)]),
    ]
    agg = aggregate(records)
    assert agg.metrics["turn.ttfa_ms"].values == (500, 600)  # none of the set-apart values
    assert "turn.ttfb_ms" not in agg.metrics
    assert agg.set_apart == {
        "call.join_ms": {"loop_lag": 1},
        "turn.ttfa_ms": {"anchor_late": 1, "loop_lag": 1},
        "turn.ttfb_ms": {"anchor_late": 1},
    }
    assert agg.set_apart_total == 4
    assert agg.set_apart_reasons == {"anchor_late": 2, "loop_lag": 2}
    # Anchored: call.join_ms of each call (2), turn.ttfa_ms of the 2 measured turns, 4 set apart.
    assert agg.anchored == 8
    assert agg.set_apart_warning == (
        "4 of 8 anchored figures of valid calls were set apart (anchor_late 2, loop_lag 2): "
        "the load generator was late around them; they are left out of the figures"
    )
    assert agg.warnings == [agg.warning, agg.set_apart_warning]  # invalid calls first
    data = json.loads(json.dumps(agg.to_json()))
    assert data["set_apart"] == agg.set_apart
    assert (data["set_apart_total"], data["anchored"]) == (4, 8)
    assert data["set_apart_reasons"] == {"anchor_late": 2, "loop_lag": 2}
    assert data["set_apart_warning"] == agg.set_apart_warning


def test_set_apart_warning_only_above_ten_percent() -> None:
    # 10 calls, each 2 anchored figures (call.join_ms, turn.ttfa_ms): 20; 2 set apart is 10 %.
    records = [record() for _ in range(8)] + [
        record(turns=[apart(0, "anchor_late", ttfa_ms=1.0)]) for _ in range(2)
    ]
    agg = aggregate(records)
    assert (agg.set_apart_total, agg.anchored) == (2, 20)
    assert agg.set_apart_warning is None and agg.warnings == []
    records.append(record(turns=[apart(0, "loop_lag", ttfa_ms=1.0)]))
    assert aggregate(records).set_apart_warning is not None  # 3 of 22
    assert aggregate([]).set_apart_warning is None
    assert aggregate([record()]).to_json()["set_apart"] == {}


def test_turn_label_is_name_else_step() -> None:
    assert turn_label({"step": 3, "name": "ask_order"}) == "ask_order"
    assert turn_label({"step": 3, "name": None}) == "step3"
    assert turn_label({"step": 7}) == "step7"  # a record from before steps had names
    assert turn_label({"index": 0}) == "step?"


def test_figures_per_turn_label() -> None:
    records = [
        record(
            turns=[
                turn(0, 400, step=1, name="greet"),
                turn(1, 900, step=3, name="ask_order"),
                turn(2, 300, step=5),
            ],
            barge_ins=[barge_in(0, 7, 50.0), barge_in(1, 9, 80.0, name="cut_in")],
        ),
        record(
            turns=[
                turn(0, 600, step=1, name="greet"),
                turn(1, step=3, name="ask_order", missed=True),
                turn(2, 500, step=5),
            ],
            barge_ins=[barge_in(0, 7, None, missed=True)],
            outcome="failed:missed_turn",
        ),
        record("invalid:generator_overloaded", turns=[turn(0, 99_999, step=1, name="greet")]),
    ]
    agg = aggregate(records)
    assert list(agg.turns) == ["greet", "ask_order", "step5", "step7", "cut_in"]  # in step order
    greet = agg.turns["greet"]
    assert isinstance(greet, TurnFigures)
    assert (greet.turns, greet.missed) == (2, 0)  # the invalid call's turn is not counted
    assert greet.metrics["turn.ttfa_ms"].values == (400, 600)
    ask = agg.turns["ask_order"]
    assert (ask.turns, ask.missed) == (2, 1)
    assert ask.metrics["turn.ttfa_ms"].values == (900,)  # the missed turn counts in `missed` only
    assert ask.metrics["turn.agent_audio_ms"].count == 1
    assert agg.turns["step5"].metrics["turn.ttfa_ms"].mean == 400
    # barge-ins carry interrupt.* figures, and a turn label carries no interrupt.* figure
    bi = agg.turns["step7"]
    assert (bi.turns, bi.missed) == (2, 1)
    assert set(bi.metrics) == {"interrupt.clear_ms"} and bi.metrics["interrupt.clear_ms"].values == (50,)
    assert agg.turns["cut_in"].metrics["interrupt.clear_ms"].values == (80,)
    assert not any(name.startswith("interrupt.") for name in agg.turns["greet"].metrics)
    # the overall figures are the labels' together
    assert agg.metrics["turn.ttfa_ms"].values == (300, 400, 500, 600, 900)
    assert agg.metrics["interrupt.clear_ms"].values == (50, 80)
    assert agg.invalid_metrics["turn.ttfa_ms"].values == (99_999,)


def test_same_label_in_two_scenarios_and_per_scenario_groups() -> None:
    records = [
        record(scenario="a", turns=[turn(0, 100, step=2, name="ask"), turn(1, 700, step=4)]),
        record(scenario="b", turns=[turn(0, 300, step=6, name="ask"), turn(1, 900, step=4)]),
        # an unnamed step whose label reads like a name joins it
        record(scenario="b", turns=[turn(0, 500, step=8, name="step4")]),
    ]
    agg = aggregate(records, by="scenario")
    assert list(agg.turns) == ["ask", "step4"]  # ordered by their lowest step
    assert agg.turns["ask"].metrics["turn.ttfa_ms"].values == (100, 300)
    assert agg.turns["step4"].turns == 3
    assert agg.turns["step4"].metrics["turn.ttfa_ms"].values == (500, 700, 900)
    assert agg.groups["a"].turns["ask"].metrics["turn.ttfa_ms"].values == (100,)
    assert list(agg.groups["b"].turns) == ["step4", "ask"]
    assert agg.groups["b"].turns["ask"].metrics["turn.ttfa_ms"].values == (300,)
    # one scenario: its group is the overall figures
    one = aggregate(records[:1], by="scenario")
    assert one.groups["a"].turns == one.turns and one.groups["a"].checks == one.checks


def test_checks_of_the_valid_calls() -> None:
    ok = {"step": 4, "ok": True, "what": "said order", "detail": "", "name": "confirm"}
    bad = {**ok, "ok": False, "detail": "heard nothing"}
    records = [
        record(expectations=[ok], scenario="a"),
        record("failed:expect", expectations=[bad], scenario="a", call_id="c2"),
        record(expectations=[ok], scenario="b"),
        record("invalid:generator_overloaded", expectations=[bad], scenario="a"),
    ]
    agg = aggregate(records, by="scenario")
    assert (agg.checks.passes, agg.checks.fails, agg.checks.rate) == (2, 1, 2 / 3)
    assert [(c.scenario, c.label, c.passes, c.fails) for c in agg.checks.checks] == [
        ("a", "confirm", 1, 1),
        ("b", "confirm", 1, 0),
    ]
    assert agg.checks.checks[0].failures == ({"call_id": "c2", "detail": "heard nothing"},)
    assert (agg.groups["a"].checks.passes, agg.groups["a"].checks.fails) == (1, 1)
    assert agg.groups["b"].checks.rate == 1.0
    assert aggregate([record()]).checks.rate is None


def test_to_json_has_turns_and_checks() -> None:
    expectation = {"step": 2, "ok": True, "what": "w", "detail": "", "name": None}
    records = [
        record(scenario="a", turns=[turn(0, 400, step=1, name="greet")], expectations=[expectation]),
        record(scenario="b", turns=[turn(0, 600, step=1, name="greet"), turn(1, step=3, missed=True)]),
    ]
    data = json.loads(json.dumps(aggregate(records, by="scenario").to_json()))
    assert data["turns"]["greet"]["turns"] == 2 and data["turns"]["greet"]["missed"] == 0
    assert data["turns"]["greet"]["metrics"]["turn.ttfa_ms"]["p50"] == 500
    assert data["turns"]["step3"] == {"turns": 1, "missed": 1, "metrics": {}}
    assert data["checks"]["passes"] == 1 and data["checks"]["rate"] == 1.0
    assert data["checks"]["checks"][0]["label"] == "step2"
    assert data["groups"]["a"]["turns"]["greet"]["metrics"]["turn.ttfa_ms"]["max"] == 400
    assert data["groups"]["b"]["checks"] == {"passes": 0, "fails": 0, "rate": None, "checks": []}


def test_a_call_the_run_interrupted_is_neither_a_success_nor_a_failure() -> None:
    # k6's interrupted iterations: a graceful stop cut them; what they measured still counts.
    records = [
        record("completed"),
        record("completed"),
        record("failed:missed_turn"),
        record("interrupted", turns=[turn(0, ttfa=900.0)]),
    ]
    agg = aggregate(records)
    assert (agg.valid, agg.completed, agg.interrupted) == (4, 2, 1)
    assert agg.failed == {"missed_turn": 1}
    assert agg.rates["call.success_rate"] == Rate(2, 3)
    assert agg.rates["call.failed_rate"] == Rate(1, 3)
    assert agg.metrics["turn.ttfa_ms"].count == 4 and agg.metrics["turn.ttfa_ms"].max == 900.0
    assert agg.to_json()["interrupted"] == 1
    only = aggregate([record("interrupted")])
    assert only.rates["call.success_rate"].value is None and only.failed == {}
