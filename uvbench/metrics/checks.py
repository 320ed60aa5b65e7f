"""Expectations counted over the calls, as k6 counts its checks: `checks ✓ 620 ✗ 0` (docs/metrics.md,
"Checks").

Pure functions over call records (the dicts of `results.jsonl`). Each expectation a valid call
checked (`record["expectations"]`) is one pass or one fail of its check; a check is one expectation
of one scenario's script, keyed by (scenario, step, what), so the same `expect:` step counts over
every call that reached it. Invalid calls (outcome "invalid:<reason>") are left out, as they are of
every other figure. The failed calls are kept, up to `FAILURES_KEPT` per check, so a report can show
which calls failed and why without carrying thousands of details; the counts stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FAILURES_KEPT = 20
"""Failed calls kept per check (`Check.failures`); `Check.fails` counts them all."""


@dataclass(frozen=True)
class Check:
    """One expectation of one scenario's script, counted over the calls that checked it."""

    scenario: str
    step: int
    name: str | None
    """The expect step's `name:`, None when unnamed."""
    what: str
    """What was expected: "agent transcript contains 'order'"."""
    passes: int
    fails: int
    failures: tuple[dict[str, Any], ...]
    """The first `FAILURES_KEPT` failed calls, in record order: {"call_id": str | None, "detail": str}."""

    @property
    def label(self) -> str:
        """The step's name, else `step<index>` (as a turn's label)."""
        return self.name or f"step{self.step}"

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "step": self.step,
            "name": self.name,
            "label": self.label,
            "what": self.what,
            "passes": self.passes,
            "fails": self.fails,
            "failures": [dict(f) for f in self.failures],
        }


@dataclass(frozen=True)
class Checks:
    """Every check of a set of calls, and their passes and fails summed."""

    passes: int
    fails: int
    checks: tuple[Check, ...]
    """Ordered by scenario, then step, then first appearance of `what`."""

    @property
    def rate(self) -> float | None:
        """Passes over all checks run (k6's `checks` rate); None when no check ran."""
        total = self.passes + self.fails
        return self.passes / total if total else None

    def to_json(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "fails": self.fails,
            "rate": self.rate,
            "checks": [c.to_json() for c in self.checks],
        }


def count_checks(records: Iterable[dict[str, Any]]) -> Checks:
    """The checks of the valid calls among `records`."""
    return count_valid_checks(r for r in records if not _is_invalid(r))


def count_valid_checks(records: Iterable[dict[str, Any]]) -> Checks:
    """`count_checks` of records already known valid (what `aggregate` has at hand)."""
    # key -> [name, passes, fails, failures, order of first appearance]
    found: dict[tuple[str, int, str], list[Any]] = {}
    for r in records:
        expectations = r.get("expectations")
        if not expectations:
            continue
        scenario = r.get("scenario")
        scenario = "" if scenario is None else str(scenario)
        for e in expectations:
            step = e.get("step")
            key = (scenario, step if type(step) is int else -1, str(e.get("what", "")))
            entry = found.get(key)
            if entry is None:
                entry = found[key] = [None, 0, 0, [], len(found)]
            if entry[0] is None and e.get("name"):
                entry[0] = str(e["name"])
            if e.get("ok"):
                entry[1] += 1
            else:
                entry[2] += 1
                if len(entry[3]) < FAILURES_KEPT:
                    entry[3].append({"call_id": r.get("call_id"), "detail": str(e.get("detail") or "")})
    ordered = sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[1][4]))
    checks = tuple(
        Check(
            scenario=scenario,
            step=step,
            name=name,
            what=what,
            passes=passes,
            fails=fails,
            failures=tuple(failures),
        )
        for (scenario, step, what), (name, passes, fails, failures, _) in ordered
    )
    return Checks(passes=sum(c.passes for c in checks), fails=sum(c.fails for c in checks), checks=checks)


def _is_invalid(record: dict[str, Any]) -> bool:
    # as `aggregate.is_invalid`, which imports this module
    outcome = record.get("outcome")
    if outcome is None:
        outcome = (record.get("metrics") or {}).get("call.outcome")
    return str(outcome).startswith("invalid:")
