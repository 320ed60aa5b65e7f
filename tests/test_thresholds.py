"""k6-style thresholds: every form parsed, every error message, evaluation on hand-built records."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_aggregate import record, turn
from uvbench.metrics.thresholds import Threshold, ThresholdError, evaluate, parse_thresholds


def one(key: str, expression: Any) -> Threshold:
    [t] = parse_thresholds({key: [expression]})
    return t


def problems(mapping: dict[str, Any]) -> list[str]:
    with pytest.raises(ThresholdError) as err:
        parse_thresholds(mapping)
    assert str(err.value) == "\n".join(err.value.problems)
    return err.value.problems


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "aggregation", "pct", "op", "value"),
    [
        ("p(95) < 1200", "p", 95, "<", 1200),
        ("p(99.9)<2000", "p", 99.9, "<", 2000),
        ("p( 0 )>=0", "p", 0, ">=", 0),
        ("p95 < 1200", "p", 95, "<", 1200),
        ("p50<700", "p", 50, "<", 700),
        ("avg < 500", "avg", None, "<", 500),
        ("med<=400", "med", None, "<=", 400),
        ("min > 1", "min", None, ">", 1),
        ("max != 5e3", "max", None, "!=", 5000),
        ("count > 0", "count", None, ">", 0),
        ("avg == 1.5", "avg", None, "==", 1.5),
        ("avg === .5", "avg", None, "===", 0.5),
    ],
)
def test_trend_forms(expression: str, aggregation: str, pct: float | None, op: str, value: float) -> None:
    t = one("turn.ttfa_ms", expression)
    assert (t.metric, t.aggregation, t.percentile, t.operator, t.value) == (
        "turn.ttfa_ms",
        aggregation,
        pct,
        op,
        value,
    )
    assert t.expression == expression and t.tags == () and not t.abort_on_fail


def test_rate_pct_and_gauge_forms() -> None:
    assert one("call.failed", "rate < 0.01").aggregation == "rate"
    assert one("call.failed_rate", "rate<0.01").metric == "call.failed_rate"
    assert one("expect.passed", "rate > 0.95").value == 0.95
    assert one("call.failed", "count < 3").aggregation == "count"
    bare = one("call.success_pct", "> 99")
    assert (bare.aggregation, bare.operator, bare.value, bare.label) == ("value", ">", 99, "value")
    assert one("call.success_pct", "rate > 0.99").aggregation == "rate"
    assert one("interrupt.success_pct", "p(50) > 90").aggregation == "p"  # also a per-call figure
    assert one("interrupt.success_pct", ">= 95").aggregation == "value"
    assert one("audio.underflow_per_min", "value < 0.5").aggregation == "value"
    assert one("audio.underflow_per_min", "< 0.5").aggregation == "value"


def test_single_string_tags_and_long_form() -> None:
    [t] = parse_thresholds({"turn.ttfa_ms{scenario:booking}": "p(99) < 2000"})
    assert (t.key, t.metric, t.tags) == (
        "turn.ttfa_ms{scenario:booking}",
        "turn.ttfa_ms",
        (("scenario", "booking"),),
    )
    assert one("turn.ttfa_ms{stage:2}", "p95<1").tags == (("stage", "2"),)
    assert one("turn.ttfa_ms{ concurrency : 50, scenario:a }", "p95<1").tags == (
        ("concurrency", "50"),
        ("scenario", "a"),
    )
    long = one("call.join_ms", {"threshold": "p(95) < 800", "abortOnFail": True, "delayAbortEval": "10s"})
    assert (long.aggregation, long.value, long.abort_on_fail, long.delay_abort_eval) == (
        "p",
        800,
        True,
        "10s",
    )
    assert one("call.join_ms", {"threshold": "avg<1"}).delay_abort_eval is None
    assert len(parse_thresholds({"turn.ttfa_ms": ["p(50) < 700", "p(95) < 1200"], "call.failed": []})) == 2


def test_every_error_message() -> None:
    assert problems(
        {
            "turn.ttfa": "p(95) < 1",
            "foo.bar": "avg<1",
            "call.outcome": "p(95) < 3",
            "call.end_reason": "> 1",
            "turn.ttfa_ms": [
                "p(101) < 5",
                "p(-1) < 5",
                "p(x) < 5",
                "> 99",
                "rate < 0.1",
                "mean < 5",
                "p(95) << 5",
                "p(95)",
                "value < 3",
            ],
            "call.success": "rate > 99",
            "call.success_pct": ["rate > 99", "> 990"],
            "call.failed_rate": "> 2",
            "turn.ttfa_ms{scenario}": "p(95)<1",
            "turn.ttfa_ms{region:eu}": "p(95)<1",
            "turn.ttfa_ms{scenario:a": "avg<1",
            "audio.underflow_per_min": "avg < 1",
            "call.join_ms": [
                {"threshold": "p(95)<1", "abortOnfail": True},
                {"abortOnFail": True},
                {"threshold": "p(95)<1", "abortOnFail": "yes"},
                {"threshold": "p(95)<1", "delayAbortEval": "soon"},
                5,
            ],
            "call.duration_ms": 7,
        }
    ) == [
        "turn.ttfa: unknown metric (did you mean turn.ttfa_ms?)",
        "foo.bar: unknown metric",
        'call.outcome: "p(95) < 3": call.outcome is a text metric and takes no p(95); '
        "gate on call.success_rate or call.failed_rate",
        'call.end_reason: "> 1": call.end_reason is a text metric and takes no bare comparison; '
        "gate on call.success_rate or call.failed_rate",
        'turn.ttfa_ms: "p(101) < 5": percentile 101 is outside 0..100',
        'turn.ttfa_ms: "p(-1) < 5": percentile -1 is outside 0..100',
        'turn.ttfa_ms: "p(x) < 5": percentile "x" is not a number',
        'turn.ttfa_ms: "> 99" lacks an aggregation (only _pct and rate metrics take a bare comparison): '
        'write e.g. "p(95) > 99"; for a share of calls use a rate metric (call.success_rate: "rate > 0.99")',
        'turn.ttfa_ms: "rate < 0.1": rate does not apply to turn.ttfa_ms '
        "(use avg, min, med, max, p(N), count)",
        'turn.ttfa_ms: "mean < 5": unknown aggregation "mean" '
        "(aggregations: avg, min, med, max, p(N), count, rate, value)",
        'turn.ttfa_ms: "p(95) << 5": cannot parse: '
        'write <aggregation> <operator> <number>, e.g. "p(95) < 1200"',
        'turn.ttfa_ms: "p(95)": cannot parse: write <aggregation> <operator> <number>, e.g. "p(95) < 1200"',
        'turn.ttfa_ms: "value < 3": value does not apply to turn.ttfa_ms '
        "(use avg, min, med, max, p(N), count)",
        'call.success: "rate > 99": a rate runs 0..1: write "rate > 0.99", or call.success_pct: "> 99"',
        'call.success_pct: "rate > 99": a rate runs 0..1: write "rate > 0.99", or "> 99" (percent)',
        'call.success_pct: "> 990": a percentage runs 0..100',
        'call.failed_rate: "> 2": a rate runs 0..1: write "> 0.02", or call.failed_pct: "> 2"',
        'turn.ttfa_ms{scenario}: bad tag filter "scenario": write {key:value}, e.g. {scenario:booking}',
        'turn.ttfa_ms{region:eu}: unknown tag "region" '
        "(tags: scenario, variant, target, stage, concurrency, vus, turn, caller, network)",
        "turn.ttfa_ms{scenario:a: bad tag filter: "
        "write metric{key:value}, e.g. turn.ttfa_ms{scenario:booking}",
        'audio.underflow_per_min: "avg < 1": avg does not apply to audio.underflow_per_min (use value)',
        'call.join_ms: unknown key "abortOnfail" in long form (keys: threshold, abortOnFail, delayAbortEval)',
        'call.join_ms: long form needs a "threshold" key, e.g. {threshold: "p(95) < 1200"}',
        "call.join_ms: abortOnFail must be true or false, not 'yes'",
        'call.join_ms: delayAbortEval \'soon\' is not a duration (e.g. "10s", "1m")',
        'call.join_ms: a threshold must be a string like "p(95) < 1200", not 5',
        "call.duration_ms: thresholds must be an expression or a list of them",
    ]


def test_did_you_mean_covers_rate_names() -> None:
    assert problems({"call.sucess_rate": "rate > 0.9"}) == [
        "call.sucess_rate: unknown metric (did you mean call.success_rate?)"
    ]


# -- evaluation ------------------------------------------------------------------------------------


def check(mapping: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    return [r.message for r in evaluate(parse_thresholds(mapping), records)]


RECORDS = [
    record(scenario="booking", stage=1, turns=[turn(0, 400), turn(1, 600)]),
    record(
        scenario="booking", stage=2, turns=[turn(0, 800), turn(1, missed=True)], outcome="failed:missed_turn"
    ),
    record(scenario="faq", stage=2, concurrency=50.0, turns=[turn(0, 1000)]),
    record("invalid:generator_overloaded", scenario="booking", stage=2, turns=[turn(0, 90_000)]),
]


def test_trend_evaluation_excludes_invalid_and_missed() -> None:
    [r] = evaluate(parse_thresholds({"turn.ttfa_ms": "p(95)<1200"}), RECORDS)
    assert (r.metric, r.expression, r.passed, r.observed) == ("turn.ttfa_ms", "p(95)<1200", True, 970)
    assert r.observed_text == "p(95)=970ms"
    assert r.message == "✓ turn.ttfa_ms p(95)<1200 p(95)=970ms"
    assert check(
        {"turn.ttfa_ms": ["max < 1000", "avg <= 700", "count == 4", "med > 700", "min>=400"]}, RECORDS
    ) == [
        "✗ turn.ttfa_ms max < 1000 max=1000ms",
        "✓ turn.ttfa_ms avg <= 700 avg=700ms",
        "✓ turn.ttfa_ms count == 4 count=4",
        "✗ turn.ttfa_ms med > 700 med=700ms",
        "✓ turn.ttfa_ms min>=400 min=400ms",
    ]
    assert check({"turn.ttfa_ms": "p(99.9) < 2000"}, RECORDS) == [
        "✓ turn.ttfa_ms p(99.9) < 2000 p(99.9)=999.4ms"
    ]


def test_tag_filters() -> None:
    assert check(
        {
            "turn.ttfa_ms{scenario:booking}": "max < 900",
            "turn.ttfa_ms{stage:2}": "p(50) < 900",
            "turn.ttfa_ms{concurrency:50}": "avg < 1200",
            "turn.ttfa_ms{scenario:booking,stage:2}": "count == 1",
            "turn.ttfa_ms{scenario:nope}": "avg < 1",
        },
        RECORDS,
    ) == [
        "✓ turn.ttfa_ms{scenario:booking} max < 900 max=800ms",
        "✗ turn.ttfa_ms{stage:2} p(50) < 900 p(50)=900ms",
        "✓ turn.ttfa_ms{concurrency:50} avg < 1200 avg=1000ms",
        "✓ turn.ttfa_ms{scenario:booking,stage:2} count == 1 count=1",
        "✗ turn.ttfa_ms{scenario:nope} avg < 1 no data: no calls match {scenario:nope}",
    ]


def test_tag_from_tags_map() -> None:
    records = [record(tags={"stage": 3}, turns=[turn(0, 10)]), record(turns=[turn(0, 20)])]
    assert check({"turn.ttfa_ms{stage:3}": "max < 15"}, records) == [
        "✓ turn.ttfa_ms{stage:3} max < 15 max=10ms"
    ]


def test_rates() -> None:
    assert check(
        {
            "call.success_pct": ["> 60", "rate > 0.7"],
            "call.failed": ["rate < 0.01", "count <= 1"],
            "turn.miss_rate": "< 0.3",
            "call.success_rate": "value == 0.5",
        },
        RECORDS[:2],
    ) == [
        "✗ call.success_pct > 60 value=50%",
        "✗ call.success_pct rate > 0.7 rate=0.5",
        "✗ call.failed rate < 0.01 rate=0.5",
        "✓ call.failed count <= 1 count=1",
        "✓ turn.miss_rate < 0.3 value=0.25",
        "✓ call.success_rate value == 0.5 value=0.5",
    ]


def test_interrupt_expect_and_underflow_rates() -> None:
    ok, bad = {"ok": True}, {"ok": False}
    barge = [
        {"index": 0, "success": True, "missed": False, "metrics": {"interrupt.clear_ms": 40.0}},
        {"index": 1, "success": False, "missed": False, "metrics": {"interrupt.clear_ms": None}},
    ]
    records = [
        record(
            barge_ins=barge, expectations=[ok], turns=[turn(0, uf=3)], underflows=3, agent_audio_ms=60_000
        ),
        record(expectations=[ok, bad], turns=[turn(0)], agent_audio_ms=60_000),
    ]
    assert check(
        {
            "interrupt.success_pct": ">= 50",
            "interrupt.success": "rate > 0.9",
            "interrupt.clear_ms": "p(95) < 100",
            "expect.passed": "rate > 0.95",
            "audio.underflow_per_min": "< 1",
            "call.any_underflow_pct": "<= 50",
        },
        records,
    ) == [
        "✓ interrupt.success_pct >= 50 value=50%",
        "✗ interrupt.success rate > 0.9 rate=0.5",
        "✓ interrupt.clear_ms p(95) < 100 p(95)=40ms",
        "✗ expect.passed rate > 0.95 rate=0.5",
        "✗ audio.underflow_per_min < 1 value=1.5/min",
        "✓ call.any_underflow_pct <= 50 value=50%",
    ]


def test_no_data_says_why() -> None:
    only_invalid = [RECORDS[3], RECORDS[3]]
    assert check({"turn.ttfa_ms": "p(95) < 1"}, only_invalid) == [
        "✗ turn.ttfa_ms p(95) < 1 no data: all 2 calls were invalid"
    ]
    assert check({"turn.ttfa_ms": "p(95) < 1"}, []) == ["✗ turn.ttfa_ms p(95) < 1 no data: no calls"]
    assert check(
        {
            "interrupt.clear_ms": "avg < 1",
            "interrupt.clear_ms{stage:1}": "count < 1",
            "interrupt.success_rate": "rate > 0.5",
            "expect.passed": "rate > 0.5",
        },
        RECORDS[:1],
    ) == [
        "✗ interrupt.clear_ms avg < 1 no data: no interrupt.clear_ms value in 1 valid call",
        "✓ interrupt.clear_ms{stage:1} count < 1 count=0",
        "✗ interrupt.success_rate rate > 0.5 no data: interrupt.success_rate has no barge-ins with an "
        "utterance to interrupt (1 valid call)",
        "✗ expect.passed rate > 0.5 no data: "
        "expect.passed_rate has no valid calls with expectations (1 valid call)",
    ]


def test_result_to_json() -> None:
    [r] = evaluate(
        parse_thresholds({"call.join_ms": [{"threshold": "avg<200", "abortOnFail": True}]}), RECORDS
    )
    assert r.to_json() == {
        "metric": "call.join_ms",
        "expression": "avg<200",
        "observed": 100,
        "observed_text": "avg=100ms",
        "passed": True,
        "message": "✓ call.join_ms avg<200 avg=100ms",
        "abort_on_fail": True,
        "delay_abort_eval": None,
    }


def test_command_line_thresholds_are_metric_colon_expression() -> None:
    from uvbench.metrics.thresholds import parse_threshold_flags

    parsed = parse_threshold_flags(["turn.ttfa_ms: p(95) < 1200", "turn.ttfa_ms:p(50)<700"])
    assert [(t.key, t.expression) for t in parsed] == [
        ("turn.ttfa_ms", "p(95) < 1200"),
        ("turn.ttfa_ms", "p(50)<700"),
    ]
    with pytest.raises(ThresholdError) as malformed:
        parse_threshold_flags(["turn.ttfa_ms p(95) < 1200", "call.failed:"], "--uvbench-threshold")
    expected = "expected 'METRIC: EXPRESSION', e.g. 'turn.ttfa_ms: p(95) < 1200'"
    assert malformed.value.problems == [
        f"--uvbench-threshold 'turn.ttfa_ms p(95) < 1200': {expected}",
        f"--uvbench-threshold 'call.failed:': {expected}",
    ]
    with pytest.raises(ThresholdError, match="unknown metric"):
        parse_threshold_flags(["turn.ttfaa_ms: p(95) < 1"])
    # A tag filter's own colons are not the one after the metric.
    tagged = parse_threshold_flags(
        ["turn.ttfa_ms{turn:ask_order}: p(95) < 1200", "call.failed{scenario:booking,stage:1}:rate<0.01"]
    )
    assert [(t.key, t.expression) for t in tagged] == [
        ("turn.ttfa_ms{turn:ask_order}", "p(95) < 1200"),
        ("call.failed{scenario:booking,stage:1}", "rate<0.01"),
    ]
    with pytest.raises(ThresholdError) as no_expression:
        parse_threshold_flags(["turn.ttfa_ms{turn:ask_order}"])
    assert no_expression.value.problems == [f"--threshold 'turn.ttfa_ms{{turn:ask_order}}': {expected}"]


# -- checks and per-turn thresholds ----------------------------------------------------------------


def expectation(ok: bool, step: int = 4, what: str = "said order") -> dict[str, Any]:
    return {"step": step, "ok": ok, "what": what, "detail": "" if ok else "heard nothing", "name": None}


CHECKED = [
    record(scenario="booking", expectations=[expectation(True), expectation(True, 6, "said bye")]),
    record(
        "failed:expect",
        scenario="booking",
        expectations=[expectation(False), expectation(True, 6, "said bye")],
    ),
    record(scenario="faq", expectations=[expectation(True)]),
    record("invalid:generator_overloaded", scenario="faq", expectations=[expectation(False)] * 5),
]


def test_checks_forms() -> None:
    assert one("checks", "rate > 0.99").aggregation == "rate"
    assert one("checks", "value>=0.5").aggregation == "value"
    assert one("checks", "> 0.99").aggregation == "value"
    assert one("checks{scenario:booking}", "count > 10").tags == (("scenario", "booking"),)
    assert problems({"checks": ["p(95) < 1", "rate > 99", "avg > 0"]}) == [
        'checks: "p(95) < 1": p(95) does not apply to checks (use rate, value, count)',
        'checks: "rate > 99": a rate runs 0..1: write "rate > 0.99"',
        'checks: "avg > 0": avg does not apply to checks (use rate, value, count)',
    ]


def test_checks_rate_over_every_expectation_of_valid_calls() -> None:
    assert check(
        {
            "checks": ["rate > 0.99", "value >= 0.8", "count == 4"],
            "checks{scenario:booking}": "rate > 0.7",
            "checks{scenario:faq}": ["rate == 1", "count == 1"],
            "checks{scenario:nope}": "rate > 0.5",
        },
        CHECKED,
    ) == [
        "✗ checks rate > 0.99 rate=0.8",  # 4 of 5 checks passed; the invalid call's 5 fails left out
        "✓ checks value >= 0.8 value=0.8",
        "✓ checks count == 4 count=4",
        "✓ checks{scenario:booking} rate > 0.7 rate=0.75",
        "✓ checks{scenario:faq} rate == 1 rate=1",
        "✓ checks{scenario:faq} count == 1 count=1",
        "✗ checks{scenario:nope} rate > 0.5 no data: no calls match {scenario:nope}",
    ]
    assert check({"checks": ["rate > 0.5", "count < 1"]}, RECORDS[:1]) == [
        "✗ checks rate > 0.5 no data: no expectation checked in 1 valid call",
        "✓ checks count < 1 count=0",
    ]


def test_turn_tag_parses_and_is_not_a_record_filter() -> None:
    t = one("turn.ttfa_ms{turn:ask_order,scenario:booking}", "p(95) < 1500")
    assert t.tags == (("turn", "ask_order"), ("scenario", "booking"))
    assert (t.turn, t.record_tags) == ("ask_order", (("scenario", "booking"),))
    assert t.matches(record(scenario="booking")) and not t.matches(record(scenario="faq"))
    assert one("interrupt.clear_ms{turn:step7}", "p(95) < 300").turn == "step7"
    assert one("turn.ttfa_ms", "p(95) < 1").turn is None


def test_turn_tag_only_on_per_turn_figures() -> None:
    why = "the turn tag picks turns and barge-ins, so it takes a turn.* or interrupt.* figure"
    assert problems(
        {
            "call.join_ms{turn:ask_order}": "p(95) < 1",
            "interrupt.success_pct{turn:step7}": "> 90",
            "turn.miss_rate{turn:ask_order}": "< 0.1",
            "checks{turn:confirm}": "rate > 0.9",
            "audio.underflow_per_min{turn:greet}": "< 1",
            "turn.ttfa_ms{turn:a,turn:b}": "p(95) < 1",
        }
    ) == [
        f"call.join_ms{{turn:ask_order}}: {why} (e.g. turn.ttfa_ms{{turn:ask_order}}); "
        "call.join_ms is one value per call",
        f"interrupt.success_pct{{turn:step7}}: {why} (e.g. turn.ttfa_ms{{turn:step7}}); "
        "interrupt.success_pct is a rate over calls or turns, not per turn label",
        f"turn.miss_rate{{turn:ask_order}}: {why} (e.g. turn.ttfa_ms{{turn:ask_order}}); "
        "turn.miss_rate is a rate over calls or turns, not per turn label",
        f"checks{{turn:confirm}}: {why} (e.g. turn.ttfa_ms{{turn:confirm}}); "
        "checks is counted per expectation (filter it by scenario)",
        f"audio.underflow_per_min{{turn:greet}}: {why} (e.g. turn.ttfa_ms{{turn:greet}}); "
        "audio.underflow_per_min is a rate over the calls' whole audio",
        "turn.ttfa_ms{turn:a,turn:b}: one turn per threshold: write one threshold per turn label",
    ]


def barge(step: int, clear: float | None, name: str | None = None) -> dict[str, Any]:
    return {
        "index": 0,
        "step": step,
        "name": name,
        "success": True,
        "missed": False,
        "metrics": {"interrupt.clear_ms": clear},
    }


PER_TURN = [
    record(
        scenario="order",
        turns=[turn(0, 400, step=1), turn(1, 1400, step=3, name="ask_order")],
        barge_ins=[barge(7, 60.0)],
    ),
    record(
        scenario="order",
        turns=[turn(0, 500, step=1), turn(1, step=3, name="ask_order", missed=True)],
        barge_ins=[barge(7, 90.0)],
        outcome="failed:missed_turn",
    ),
    record(scenario="faq", turns=[turn(0, 300, step=1), turn(1, 1000, step=3, name="ask_order")]),
    record(
        "invalid:generator_overloaded", scenario="order", turns=[turn(1, 90_000, step=3, name="ask_order")]
    ),
]


def test_turn_tag_keeps_the_turns_of_that_label() -> None:
    assert check(
        {
            "turn.ttfa_ms{turn:ask_order}": ["max < 1500", "count == 2", "min > 900"],
            "turn.ttfa_ms{turn:step1}": "max < 600",
            "turn.ttfa_ms{turn:ask_order,scenario:faq}": "max < 1200",
            "interrupt.clear_ms{turn:step7}": ["p(50) < 100", "count == 2"],
            "turn.ttfa_ms": "max < 1500",
        },
        PER_TURN,
    ) == [
        # the missed turn and the invalid call's turn are left out
        "✓ turn.ttfa_ms{turn:ask_order} max < 1500 max=1400ms",
        "✓ turn.ttfa_ms{turn:ask_order} count == 2 count=2",
        "✓ turn.ttfa_ms{turn:ask_order} min > 900 min=1000ms",
        "✓ turn.ttfa_ms{turn:step1} max < 600 max=500ms",
        "✓ turn.ttfa_ms{turn:ask_order,scenario:faq} max < 1200 max=1000ms",
        "✓ interrupt.clear_ms{turn:step7} p(50) < 100 p(50)=75ms",
        "✓ interrupt.clear_ms{turn:step7} count == 2 count=2",
        "✓ turn.ttfa_ms max < 1500 max=1400ms",
    ]


def test_turn_tag_without_data_says_why() -> None:
    assert check(
        {
            "turn.ttfa_ms{turn:ask_ordr}": ["p(95) < 1500", "count < 1"],
            "interrupt.clear_ms{turn:ask_order}": "p(95) < 100",
            "turn.ttfa_ms{turn:step7}": "avg < 100",
            "turn.ttfa_ms{turn:ask_order,scenario:nope}": "avg < 100",
        },
        PER_TURN,
    ) == [
        "✗ turn.ttfa_ms{turn:ask_ordr} p(95) < 1500 no data: "
        "no turn or barge-in labelled ask_ordr in 3 valid calls",
        "✓ turn.ttfa_ms{turn:ask_ordr} count < 1 count=0",
        "✗ interrupt.clear_ms{turn:ask_order} p(95) < 100 no data: "
        "no interrupt.clear_ms value of turn ask_order in 3 valid calls",
        "✗ turn.ttfa_ms{turn:step7} avg < 100 no data: no turn.ttfa_ms value of turn step7 in 3 valid calls",
        "✗ turn.ttfa_ms{turn:ask_order,scenario:nope} avg < 100 no data: no calls match {scenario:nope}",
    ]


def test_underflow_gauge_needs_enough_audio() -> None:
    short = [record(underflows=4, agent_audio_ms=1_570)]
    assert check({"audio.underflow_per_min": "< 1"}, short) == [
        "✗ audio.underflow_per_min < 1 no data: "
        "1.57 s of agent audio heard, under the 10 s it needs (1 valid call)"
    ]
    assert check({"audio.underflow_per_min": "< 1"}, [record()]) == [
        "✗ audio.underflow_per_min < 1 no data: audio.underflow_per_min has no minutes of agent audio "
        "heard (greeting and turns) (1 valid call)"
    ]


def test_caller_and_network_levels_filter_and_a_label_keeps_its_commas() -> None:
    def level(caller: str, network: str, ttfa: float, false_barge_ins: int) -> dict[str, Any]:
        r = record(tags={"caller": caller, "network": network}, turns=[turn(0, ttfa)])
        r["metrics"]["call.false_barge_in_count"] = false_barge_ins
        return r

    link = "jitter=30ms,max=120ms+bursts=300ms/1000ms"
    records = [
        level("snr=30dB", "none", 500, 0),
        level("snr=0dB", "none", 900, 2),
        level("snr=0dB", link, 1400, 3),
    ]
    assert check(
        {
            "turn.ttfa_ms{caller:snr=0dB}": "max < 1000",
            f"turn.ttfa_ms{{caller:snr=0dB,network:{link}}}": "max < 1500",
            f"turn.ttfa_ms{{network:{link}, caller:snr=0dB}}": "count == 1",
            "call.false_barge_in{caller:snr=30dB}": "rate == 0",
            "call.false_barge_in_count{caller:snr=0dB}": "max <= 2",
        },
        records,
    ) == [
        "✗ turn.ttfa_ms{caller:snr=0dB} max < 1000 max=1400ms",
        f"✓ turn.ttfa_ms{{caller:snr=0dB,network:{link}}} max < 1500 max=1400ms",
        f"✓ turn.ttfa_ms{{network:{link}, caller:snr=0dB}} count == 1 count=1",
        "✓ call.false_barge_in{caller:snr=30dB} rate == 0 rate=0",
        "✗ call.false_barge_in_count{caller:snr=0dB} max <= 2 max=3",
    ]
