"""Aggregates over hand-built call records (the shape of `results.jsonl`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uvbench.metrics.aggregate import RATES, Rate, Stats, aggregate, percentile


def turn(index: int, ttfa: float | None = 500.0, *, missed: bool = False, audio: float = 3000.0, uf: int = 0):
    metrics = {"turn.ttfa_ms": None if missed else ttfa, "turn.agent_audio_ms": 0 if missed else audio}
    metrics["turn.underflow_count"] = uf
    return {"index": index, "missed": missed, "metrics": metrics}


def record(
    outcome: str = "completed",
    *,
    scenario: str = "booking",
    turns: list[dict[str, Any]] | None = None,
    barge_ins: list[dict[str, Any]] | None = None,
    underflows: int = 0,
    expectations: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "outcome": outcome,
        "passed": outcome == "completed",
        "metrics": {
            "call.join_ms": 100.0,
            "call.underflow_count": underflows,
            "call.outcome": outcome,
            "call.end_reason": "hangup",
        },
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


def test_underflow_per_minute_of_turn_audio() -> None:
    records = [
        record(turns=[turn(0, audio=30_000, uf=2), turn(1, audio=30_000, uf=1)], underflows=5),
        record(turns=[turn(0, audio=60_000, uf=0)]),
    ]
    rate = aggregate(records).rates["audio.underflow_per_min"]
    assert rate == Rate(3, 2.0)  # turn underflows over 2 minutes of turn audio (greeting left out)
    assert rate.value == 1.5
    assert aggregate([record(turns=[])]).rate("audio.underflow_per_min") is None


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
