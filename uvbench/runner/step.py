"""Step mode, knee finding: raise concurrency stepwise until a gate breaks; report the last level
that held (Gatling's `incrementConcurrentUsers(..).times(n).eachLevelLasting(..)`, judged).

    uvbench run booking.yaml --step 10:10:300:30s --threshold 'turn.ttfa_ms: p(95) < 1200'

Levels are START, START+STEP, ... up to MAX concurrent calls (closed model), each held HOLD. Every
call is tagged `step` = the level (its concurrency target) it started at. A level is judged on the
records of the calls that STARTED at it, once its hold is over and all of them have ended (so a
verdict may come while the next level already runs; levels are judged in order). It holds when:

- no call was invalid (the generator kept up: `invalid:*`), no call was lost (ended without a
  record: it raised, or its worker process died), and
- every threshold passes on those records, or, without thresholds, no call failed (`failed:*`).

The first level that breaks ends the ramp: no call starts after that, and the calls in flight are
left to finish (each call ends on its own: script, timeouts), so every started call keeps its record
in the run folder; levels above the one that broke are reported "not judged". Ctrl-C cuts it short.

`Stepper` is sans-I/O: fed the clock (seconds since the run started), call starts and ends; the
run's coordinator asks it for the level and sends each pacing process its share (see
runner/workers.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from uvbench.metrics.thresholds import Threshold, ThresholdResult, evaluate
from uvbench.runner.load import LoadProfile


class StepError(ValueError):
    """A --step value that cannot be used; one line saying what and how to fix it."""


@dataclass(frozen=True)
class StepPlan:
    start: int
    step: int
    max: int
    hold_s: float

    def __post_init__(self) -> None:
        if self.start < 1 or self.step < 1 or self.max < self.start:
            raise StepError(
                f"step levels {self.start}:{self.step}:{self.max}: need START >= 1, STEP >= 1, MAX >= START"
            )
        if self.hold_s < 1:
            raise StepError(f"each level must be held at least 1s, got {self.hold_s:g}s")

    @classmethod
    def parse(cls, text: str) -> StepPlan:
        """START:STEP:MAX:HOLD, e.g. "10:10:300:30s" (HOLD a duration: 30s, 1m; a bare number is s)."""
        from uvbench.scenario import duration_seconds

        parts = [p.strip() for p in text.split(":")]
        try:
            if len(parts) != 4:
                raise ValueError
            start, step, top = (int(p) for p in parts[:3])
            hold = duration_seconds(parts[3])
        except ValueError:
            raise StepError(
                f"--step {text!r} is not START:STEP:MAX:HOLD (expected e.g. 10:10:300:30s)"
            ) from None
        return cls(start, step, top, hold)

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(range(self.start, self.max + 1, self.step))

    @property
    def total_s(self) -> float:
        return len(self.levels) * self.hold_s

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "step": self.step, "max": self.max, "hold_s": self.hold_s}


HELD, BROKE, NOT_JUDGED = "held", "broke", "not judged"


@dataclass
class Level:
    concurrency: int
    started: int = 0
    closed: bool = False
    """No more calls will start at this level (its hold is over and every worker moved on)."""
    records: list[dict[str, Any]] = field(default_factory=list)
    lost: int = 0
    verdict: str = NOT_JUDGED
    reasons: list[str] = field(default_factory=list)
    checks: list[ThresholdResult] = field(default_factory=list)

    @property
    def ended(self) -> int:
        return len(self.records) + self.lost

    def to_json(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "calls": self.started,
            "finished": self.ended,
            "verdict": self.verdict,
            "reasons": self.reasons,
            "thresholds": [c.to_json() for c in self.checks],
        }


def judge(
    records: list[dict[str, Any]], lost: int, thresholds: list[Threshold]
) -> tuple[list[str], list[ThresholdResult]]:
    """Why a level's calls break the gate (empty: it held), and the thresholds' results."""
    reasons: list[str] = []
    if not records and not lost:
        return ["no call started at this level"], []
    if lost:
        reasons.append(f"{lost} call{'s' if lost != 1 else ''} ended without a record")
    invalid = _outcomes(records, "invalid:")
    if invalid:
        reasons.append(invalid)
    checks = evaluate(thresholds, records) if thresholds else []
    if thresholds:
        reasons.extend(c.message for c in checks if not c.passed)
    else:
        failed = _outcomes(records, "failed:")
        if failed:
            reasons.append(failed)
    return reasons, checks


def _outcomes(records: list[dict[str, Any]], prefix: str) -> str:
    counts: dict[str, int] = {}
    for r in records:
        if str(r.get("outcome", "")).startswith(prefix):
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    if not counts:
        return ""
    n = sum(counts.values())
    kinds = ", ".join(f"{o} x{c}" for o, c in sorted(counts.items()))
    word = prefix.rstrip(":")
    return f"{n} {word} call{'s' if n != 1 else ''} of {len(records)} ({kinds})"


class Stepper:
    """The level clock and the verdicts (sans-I/O). Levels are named by their concurrency."""

    def __init__(self, plan: StepPlan, thresholds: list[Threshold] | tuple[Threshold, ...] = ()) -> None:
        self.plan = plan
        self.thresholds = list(thresholds)
        self.levels = {c: Level(c) for c in plan.levels}
        self._order = list(self.levels.values())
        self.broke: Level | None = None

    def level_at(self, t_s: float) -> int | None:
        """The level a call starting `t_s` seconds into the run belongs to; None when no call
        should start any more (every level's hold is over, or a level broke)."""
        if self.broke is not None or t_s < 0:
            return None
        index = int(t_s // self.plan.hold_s)
        return self._order[index].concurrency if index < len(self._order) else None

    def started(self, level: int, n: int = 1) -> None:
        self.levels[level].started += n

    def close(self, level: int) -> None:
        """No more calls will start at `level`: once they have all ended it can be judged."""
        self.levels[level].closed = True
        self._settle()

    def ended(self, level: int, record: dict[str, Any] | None) -> None:
        """A call that started at `level` ended; None when it left no record (lost)."""
        entry = self.levels[level]
        if record is None:
            entry.lost += 1
        else:
            entry.records.append(record)
        self._settle()

    def _settle(self) -> None:
        for entry in self._order:
            if entry.verdict == BROKE:
                return
            if entry.verdict == HELD:
                continue
            if not entry.closed or entry.ended < entry.started:
                return
            entry.reasons, entry.checks = judge(entry.records, entry.lost, self.thresholds)
            entry.verdict = BROKE if entry.reasons else HELD
            if entry.verdict == BROKE:
                self.broke = entry
                return

    @property
    def held(self) -> Level | None:
        """The highest level that held (levels are judged in order, so all below it held too)."""
        held = [entry for entry in self._order if entry.verdict == HELD]
        return held[-1] if held else None

    def knee(self, *, interrupted: bool = False) -> dict[str, Any]:
        """summary.json's `knee` object: the plan, the verdict line, each level tried."""
        return {
            "plan": self.plan.to_json(),
            "held": self.held.concurrency if self.held else None,
            "broke": self.broke.concurrency if self.broke else None,
            "reasons": self.broke.reasons if self.broke else [],
            "summary": self.summary(interrupted=interrupted),
            "levels": [
                entry.to_json() for entry in self._order if entry.started or entry.ended or entry.closed
            ],
        }

    def summary(self, *, interrupted: bool = False) -> str:
        held, broke = self.held, self.broke
        if broke is not None:
            why = "; ".join(broke.reasons)
            if held is None:
                first = f"the first level ({broke.concurrency} concurrent calls)"
                return f"knee: not found: {first} already broke: {why}"
            return f"knee: {held.concurrency} concurrent calls held (level {broke.concurrency} broke: {why})"
        pending = [e for e in self._order if e.verdict == NOT_JUDGED and (e.started or e.closed)]
        if not pending and held is not None and held is self._order[-1]:
            return (
                f"knee: not reached: every level held, up to {held.concurrency} concurrent calls "
                "(raise MAX to go further)"
            )
        why = "the run was interrupted" if interrupted else "its calls did not all end"
        first = pending[0].concurrency if pending else None
        at_least = f"at least {held.concurrency} concurrent calls held" if held else "no level judged"
        return f"knee: not found: {at_least}" + (f" (level {first} not judged: {why})" if first else "")


@dataclass(frozen=True)
class StepProfile(LoadProfile):
    """A closed-model load profile whose target and end come from a control object (step mode):
    `run_load` reads it as any profile; `duration_s` is the longest the levels can last."""

    control: Any = None

    def target_at(self, t_s: float) -> int:
        return self.control.target_at(t_s)

    def finished(self, t_s: float, started: int) -> bool:
        return self.control.finished(t_s, started)

    def stage_at(self, t_s: float) -> int | None:
        return None
