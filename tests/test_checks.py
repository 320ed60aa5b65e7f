"""k6-style checks counted over hand-built call records (the shape of `results.jsonl`)."""

from __future__ import annotations

import json
from typing import Any

from uvbench.metrics.checks import FAILURES_KEPT, Check, Checks, count_checks


def expect(
    step: int, what: str, ok: bool = True, *, name: str | None = None, detail: str = ""
) -> dict[str, Any]:
    return {
        "step": step,
        "ok": ok,
        "what": what,
        "detail": detail or ("fine" if ok else "nope"),
        "name": name,
    }


def record(
    expectations: list[dict[str, Any]],
    *,
    scenario: str = "booking",
    outcome: str = "completed",
    call_id: str = "c",
) -> dict[str, Any]:
    return {"scenario": scenario, "call_id": call_id, "outcome": outcome, "expectations": expectations}


def test_grouped_per_scenario_step_and_what() -> None:
    records = [
        record([expect(4, "agent transcript contains 'order'"), expect(4, "tool lookupOrder called")]),
        record([expect(4, "agent transcript contains 'order'", False), expect(4, "tool lookupOrder called")]),
        record([expect(4, "agent transcript contains 'order'")], scenario="support"),
    ]
    checks = count_checks(records)
    assert [(c.scenario, c.step, c.what, c.passes, c.fails) for c in checks.checks] == [
        ("booking", 4, "agent transcript contains 'order'", 1, 1),
        ("booking", 4, "tool lookupOrder called", 2, 0),
        ("support", 4, "agent transcript contains 'order'", 1, 0),
    ]
    assert (checks.passes, checks.fails) == (4, 1)
    assert checks.rate == 0.8


def test_ordered_by_scenario_then_step_then_first_appearance() -> None:
    records = [
        record([expect(9, "zeta"), expect(9, "alpha")], scenario="b"),
        record([expect(2, "late"), expect(9, "mid")], scenario="b"),
        record([expect(5, "x")], scenario="a"),
    ]
    order = [(c.scenario, c.step, c.what) for c in count_checks(records).checks]
    # within a step, `what` keeps the order it first appeared in, not alphabetical order
    assert order == [("a", 5, "x"), ("b", 2, "late"), ("b", 9, "zeta"), ("b", 9, "alpha"), ("b", 9, "mid")]


def test_invalid_calls_left_out() -> None:
    records = [
        record([expect(1, "said hello")]),
        record([expect(1, "said hello", False)], outcome="invalid:generator_overloaded"),
        # an older record without `outcome` carries it in its metrics
        {
            "scenario": "booking",
            "metrics": {"call.outcome": "invalid:clock"},
            "expectations": [expect(1, "said hello", False)],
        },
        record([expect(1, "said hello", False)], outcome="failed:expectation"),
    ]
    checks = count_checks(records)
    assert (checks.passes, checks.fails) == (1, 1)
    assert checks.checks[0].failures == ({"call_id": "c", "detail": "nope"},)


def test_failures_capped_but_counted_exactly() -> None:
    n = FAILURES_KEPT + 7
    records = [
        record([expect(3, "said bye", False, detail=f"heard {i}")], call_id=f"call-{i}") for i in range(n)
    ]
    records.append(record([expect(3, "said bye")], call_id="ok"))
    (check,) = count_checks(records).checks
    assert (check.passes, check.fails) == (1, n)
    assert len(check.failures) == FAILURES_KEPT
    # the first failed calls, in record order
    assert check.failures[0] == {"call_id": "call-0", "detail": "heard 0"}
    assert check.failures[-1]["call_id"] == f"call-{FAILURES_KEPT - 1}"


def test_rate_none_without_checks() -> None:
    checks = count_checks([record([]), {"scenario": "x", "outcome": "completed"}])
    assert checks == Checks(passes=0, fails=0, checks=())
    assert checks.rate is None
    assert checks.to_json() == {"passes": 0, "fails": 0, "rate": None, "checks": []}
    all_failed = count_checks([record([expect(1, "a", False)])])
    assert all_failed.rate == 0.0


def test_label_is_name_else_step() -> None:
    records = [
        record([expect(2, "a", name=None), expect(6, "b", name="confirm")]),
        # a name seen on a later call still names the check
        record([expect(2, "a", name="greet")]),
    ]
    labels = [(c.step, c.name, c.label) for c in count_checks(records).checks]
    assert labels == [(2, "greet", "greet"), (6, "confirm", "confirm")]
    assert Check("s", 7, None, "w", 1, 0, ()).label == "step7"


def test_to_json_shape() -> None:
    records = [record([expect(4, "tool called", False, name="lookup", detail="no tool call")], call_id="c-1")]
    out = count_checks(records).to_json()
    assert json.loads(json.dumps(out)) == out  # plain JSON
    assert out == {
        "passes": 0,
        "fails": 1,
        "rate": 0.0,
        "checks": [
            {
                "scenario": "booking",
                "step": 4,
                "name": "lookup",
                "label": "lookup",
                "what": "tool called",
                "passes": 0,
                "fails": 1,
                "failures": [{"call_id": "c-1", "detail": "no tool call"}],
            }
        ],
    }
