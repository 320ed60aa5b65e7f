"""What `uvbench run PATH` runs: the scenarios (of a file, a folder or a suite), each load with the
CLI's flags applied, the files' thresholds, and the expanded `load:` the run reports.

Not imported by `uvbench.scenario` itself: it builds runner objects (`LoadProfile`, `LoadGroup`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uvbench.scenario.load_config import (
    CliLoad,
    LoadConfigError,
    apply_cli,
    format_duration,
    parsed_thresholds,
)
from uvbench.scenario.loader import is_suite_file, load_scenarios
from uvbench.scenario.model import Scenario
from uvbench.scenario.suite import LoadedSuite, load_suite

if TYPE_CHECKING:
    from uvbench.metrics.thresholds import Threshold
    from uvbench.runner.fanout import LoadGroup
    from uvbench.runner.load import LoadProfile

__all__ = ["CliLoad", "LoadConfigError", "PlannedLoad", "RunPlan", "plan_run"]


@dataclass
class PlannedLoad:
    """One load of the run: its expanded k6 form, the profile that runs it, and what it calls."""

    spec: Any
    """The resolved executor model (`load_config`), every default filled in."""
    profile: LoadProfile
    pools: tuple[tuple[tuple[Scenario, ...], float], ...]
    """(scenarios, weight) per suite entry; a plain run has one pool."""
    start_s: float = 0.0
    entries: dict[str, float] = field(default_factory=dict)
    """Suite entries on this load, with their weights."""

    def group(self, name: str) -> LoadGroup:
        from uvbench.runner.fanout import LoadGroup

        return LoadGroup(name, self.profile, self.pools, self.start_s)

    def expanded(self, *, suite: bool) -> dict[str, Any]:
        out = self.spec.expanded()
        if suite:
            out = {"scenarios": dict(self.entries), "startTime": format_duration(self.start_s), **out}
        return out

    def text(self, *, suite: bool) -> str:
        if not suite:
            return f"load: {self.spec.text()}"
        if len(self.entries) > 1:
            who = ", ".join(f"{name} (weight {weight:g})" for name, weight in self.entries.items())
            return f"load shared by {who}: {self.spec.text()}"
        (name,) = self.entries
        start = f" from {format_duration(self.start_s)}" if self.start_s else ""
        return f"load of {name}{start}: {self.spec.text()}"


@dataclass
class RunPlan:
    name: str
    scenarios: list[Scenario]
    """Every scenario of the run (all loads)."""
    loads: list[PlannedLoad]
    thresholds: list[Threshold]
    """From the files (`--threshold` adds to them)."""
    suite: bool = False
    scenario_tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    """A suite entry's tags, by scenario name, for its records."""
    notes: list[str] = field(default_factory=list)
    """Things the run should say before it starts (skipped suite files, unused blocks)."""

    @property
    def profile(self) -> LoadProfile:
        """The profile of a run with one load (a scenario file or folder)."""
        return self.loads[0].profile

    @property
    def groups(self) -> list[LoadGroup]:
        names = [
            next(iter(load.entries), "default") if len(load.entries) == 1 else "shared" for load in self.loads
        ]
        return [load.group(name) for load, name in zip(self.loads, names, strict=True)]

    @property
    def load_json(self) -> dict[str, Any] | list[dict[str, Any]]:
        """summary.json's `load`: the expanded load, or for a suite one per load."""
        if not self.suite:
            return self.loads[0].expanded(suite=False)
        return [load.expanded(suite=True) for load in self.loads]

    def header(self) -> list[str]:
        return [load.text(suite=self.suite) for load in self.loads]

    @property
    def total_calls(self) -> int | None:
        """Calls the run will make when every load counts them (for a progress bar), else None."""
        counts = [load.profile.iterations for load in self.loads]
        if any(c is None for c in counts):
            return None
        return sum(c for c in counts if c is not None)

    @property
    def duration_s(self) -> float | None:
        """The run's length when some load has one (its end from the run's start)."""
        ends = [
            load.start_s + load.profile.total_duration_s
            for load in self.loads
            if load.profile.total_duration_s is not None
        ]
        return max(ends) if ends else None


def plan_run(path: str | os.PathLike, cli: CliLoad | None = None, *, repeat: int = 1) -> RunPlan:
    """The plan for a scenario file, a folder of them, or a suite file. Raises ScenarioError for
    problems in files (file:line:col) and LoadConfigError for a load the flags cannot make."""
    path = Path(path)
    cli = cli or CliLoad()
    if path.is_file() and is_suite_file(path):
        return _plan_suite(load_suite(path), cli, repeat)
    scenarios = load_scenarios(path)
    notes = []
    if path.is_dir():
        for suite in sorted(p for p in path.glob("*.y*ml") if is_suite_file(p)):
            notes.append(f"{suite} is a suite file: skipped (run it on its own: uvbench run {suite})")
    by_source: dict[str | None, Scenario] = {}
    for scenario in scenarios:
        by_source.setdefault(scenario.source, scenario)
    specs = {source: s.load_spec for source, s in by_source.items() if s.load_spec is not None}
    if len({json.dumps(spec.expanded()) for spec in specs.values()}) > 1:
        first, second = list(specs)[:2]
        raise LoadConfigError(
            f"{first} and {second} set different loads (expected one load per run;"
            " a suite file gives each scenario file a load of its own)"
        )
    spec = apply_cli(next(iter(specs.values()), None), cli)
    load = _planned(spec, ((tuple(scenarios), 1.0),), len(scenarios), repeat)
    thresholds: dict[tuple[str, str], Threshold] = {}
    for scenario in by_source.values():
        for threshold in parsed_thresholds(scenario.thresholds):
            thresholds.setdefault((threshold.key, threshold.expression), threshold)
    bases = {s.base_name for s in scenarios}
    name = scenarios[0].base_name if len(bases) == 1 else path.stem
    notes += _abort_notes(thresholds.values())
    return RunPlan(name, scenarios, [load], list(thresholds.values()), notes=notes)


def _abort_notes(thresholds: Any) -> list[str]:
    aborting = [f"{t.key}: {t.expression}" for t in thresholds if t.abort_on_fail]
    if not aborting:
        return []
    return [
        f"abortOnFail is kept but not acted on yet ({'; '.join(aborting)}): the run goes on, and the"
        " threshold gates the exit code at the end"
    ]


def _planned(
    spec: Any, pools: Any, scenarios: int, repeat: int, start_s: float = 0.0, entries=None
) -> PlannedLoad:
    from uvbench.runner.load import LoadError

    resolved = spec.resolved(scenarios=scenarios, repeat=repeat)
    try:
        profile = resolved.profile(scenarios=scenarios, repeat=repeat)
    except LoadError as exc:
        raise LoadConfigError(f"load {resolved.text()}: {exc}") from None
    return PlannedLoad(resolved, profile, pools, start_s, dict(entries or {}))


def _plan_suite(loaded: LoadedSuite, cli: CliLoad, repeat: int) -> RunPlan:
    notes = list(loaded.notes)
    loads: list[PlannedLoad] = []
    shared = loaded.shared
    if shared:
        spec = apply_cli(loaded.suite.load_spec, cli)
        pools = tuple((tuple(e.scenarios), e.entry.weight) for e in shared)
        count = sum(len(e.scenarios) for e in shared)
        loads.append(_planned(spec, pools, count, repeat, 0.0, {e.name: e.entry.weight for e in shared}))
    elif cli.any:
        raise LoadConfigError(
            f"the load flags set the load {loaded.source}'s entries share, and every entry has its own"
            " load: (expected flags only when some entry has no load:)"
        )
    elif loaded.suite.load_spec is not None:
        notes.append(f"{loaded.source}: the top-level load is not used (every entry has its own load:)")
    for e in loaded.apart:
        pools = ((tuple(e.scenarios), 1.0),)
        loads.append(
            _planned(e.entry.load, pools, len(e.scenarios), repeat, e.entry.startTime, {e.name: 1.0})
        )
    scenarios = [s for e in loaded.entries for s in e.scenarios]
    tags = {s.name: dict(e.entry.tags) for e in loaded.entries for s in e.scenarios if e.entry.tags}
    thresholds = parsed_thresholds(loaded.suite.thresholds)
    notes += _abort_notes(thresholds)
    return RunPlan(loaded.name, scenarios, loads, thresholds, suite=True, scenario_tags=tags, notes=notes)
