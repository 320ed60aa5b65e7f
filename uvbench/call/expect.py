"""A scenario's `expect` steps, checked after the call against its transcripts, tools and figures."""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any

from uvbench.call.live import LiveState
from uvbench.metrics import CallMetrics
from uvbench.scenario import Expectation, MetricBound, ToolCalled, TranscriptContains, TranscriptRegex

OPERATORS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Checked:
    step: int
    ok: bool
    what: str
    detail: str
    name: str | None = None
    """The expect step's `name:`."""

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "ok": self.ok, "what": self.what, "detail": self.detail, "name": self.name}


def check(
    step: int, expectation: Expectation, live: LiveState, metrics: CallMetrics, *, name: str | None = None
) -> Checked:
    """`expectation` of script step `step` (named `name`) judged against the finished call."""
    return replace(_check(step, expectation, live, metrics), name=name)


def _check(step: int, expectation: Expectation, live: LiveState, metrics: CallMetrics) -> Checked:
    if isinstance(expectation, TranscriptContains):
        texts = live.text_of(expectation.role)
        needle = expectation.transcript_contains
        ok = any(needle.lower() in t.lower() for t in texts)
        return Checked(step, ok, f"{expectation.role} transcript contains {needle!r}", _said(texts))
    if isinstance(expectation, TranscriptRegex):
        texts = live.text_of(expectation.role)
        ok = any(expectation.regex.search(t) for t in texts)
        return Checked(
            step, ok, f"{expectation.role} transcript matches {expectation.transcript_regex!r}", _said(texts)
        )
    if isinstance(expectation, ToolCalled):
        wanted = expectation.with_ or {}
        calls = [c for c in live.tool_calls if c["name"] == expectation.tool_called]
        ok = any(all(c["parameters"].get(k) == v for k, v in wanted.items()) for c in calls)
        what = f"tool {expectation.tool_called!r} called" + (f" with {wanted}" if wanted else "")
        seen = "; ".join(f"{c['name']}({c['parameters']})" for c in live.tool_calls) or "no tool calls"
        return Checked(step, ok, what, f"saw {seen}")
    if isinstance(expectation, MetricBound):
        return _metric(step, expectation, metrics)
    raise TypeError(f"unknown expectation {expectation!r}")


def _said(texts: list[str]) -> str:
    joined = " | ".join(t for t in texts if t)
    return f"heard: {joined[:300]}" if joined else "heard nothing"


def _metric(step: int, bound: MetricBound, metrics: CallMetrics) -> Checked:
    name = bound.metric
    if name.startswith("turn."):
        scope = metrics.turns if bound.turn is None else metrics.turns[bound.turn : bound.turn + 1]
        label = "every turn" if bound.turn is None else f"turn {bound.turn}"
    elif name.startswith("interrupt.") and name != "interrupt.success_pct":
        scope = (
            metrics.barge_ins
            if bound.barge_in is None
            else metrics.barge_ins[bound.barge_in : bound.barge_in + 1]
        )
        label = "every barge-in" if bound.barge_in is None else f"barge-in {bound.barge_in}"
    else:
        label = "the call"
        scope = [{"metrics": metrics.metrics, "set_apart": metrics.set_apart}]
    rule = " and ".join(f"{op} {value}" for op, value in bound.bounds())
    what = f"{name} {rule} ({label})"
    # A figure set apart (the generator cannot vouch for it, metrics.validity) is not judged.
    apart = [item["set_apart"][name]["reason"] for item in scope if name in (item.get("set_apart") or {})]
    values = [item["metrics"].get(name) for item in scope if name not in (item.get("set_apart") or {})]
    not_judged = f"not judged: set apart ({', '.join(sorted(set(apart)))})" if apart else ""
    if apart and not values:
        return Checked(step, True, what, not_judged)
    if not values or any(v is None for v in values):
        return Checked(
            step, False, what, f"no value: got {values}" + (f"; {len(apart)} {not_judged}" if apart else "")
        )
    ok = all(OPERATORS[op](v, limit) for v in values for op, limit in bound.bounds())
    shown = ", ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in values)
    return Checked(step, ok, what, f"got {shown}" + (f"; {len(apart)} {not_judged}" if apart else ""))
