"""Suite files: several scenario files in one run, each with a weight or a load of its own (k6's
`scenarios:` map). See scenarios/suite_example.yaml.

    name: mixed-traffic                     # optional (default: the file's stem)
    load: {executor: shared-iterations, vus: 4, iterations: 20}   # or k6's shortcuts
    thresholds: {"turn.ttfa_ms{scenario:greeting}": ["p(95) < 1500"]}
    scenarios:                              # what makes the file a suite
      greeting: {file: quickstart.yaml, weight: 3, tags: {kind: smoke}}
      buffers:  {file: buffer_matrix.yaml}  # weight 1
      spike:    {file: quickstart.yaml, startTime: 30s,
                 load: {executor: constant-arrival-rate, rate: 2, duration: 20s, preAllocatedVUs: 4}}

Entries without their own `load` share the top-level load: each of its calls picks an entry by
weight (then that entry's next matrix variant). Entries with their own `load` run in parallel with
it, each from its `startTime`. A record's `scenario` is the entry's name (`buffers[...]` for a
matrix variant), so thresholds filter entries with `{scenario:greeting}`; an entry's `tags` are
added to its records' tags. Paths are relative to the suite file. The referenced files' own
`load:` and `thresholds:` are not used (the suite's apply; the run says so).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationError, model_validator

from uvbench.scenario.base import JSON_SCHEMA_DIALECT, Duration, _Model, did_you_mean, problem, show
from uvbench.scenario.load_config import FileLoad, LoadSpec, Thresholds
from uvbench.scenario.loader import (
    MAX_SCENARIOS,
    SUITE_KEY,
    ScenarioError,
    _documents,
    _report_pydantic,
    _Sink,
    is_suite_file,
    load_scenarios,
    read_yaml_text,
    render,
    report_shortcuts,
    report_thresholds,
)
from uvbench.scenario.model import NAME_PATTERN, Scenario

RESERVED_TAGS = (
    "attempt",
    "vu",
    "iteration",
    "concurrency",
    "stage",
    "start_offset_s",
    "scenario",
    "variant",
)
"""Tags the runner sets on every record; an entry's tags may not replace them."""
_SCENARIO_ONLY = ("script", "call", "client", "tools", "target", "matrix", "variables", "prior_call_id")


class SuiteEntry(_Model):
    """One named entry: a scenario file, and either a weight in the shared load or a load of its own."""

    file: str
    """The scenario file, relative to the suite file's folder (one scenario; a matrix is fine)."""
    weight: Annotated[float, Field(gt=0)] = 1
    """Share of the suite's shared load: each call picks an entry with probability weight / sum."""
    load: LoadSpec | None = None
    """A load of its own (a k6 executor): the entry then runs in parallel with the rest."""
    startTime: Duration = 0.0
    """With its own load: start this long after the run starts (k6's startTime)."""
    tags: dict[str, str | int | float | bool] = {}
    """Added to the tags of each of its calls' records."""

    @model_validator(mode="after")
    def _coherent(self) -> SuiteEntry:
        if self.load is not None and "weight" in self.model_fields_set:
            raise problem(
                "an entry with its own load runs apart from the shared load"
                " (expected weight only on entries without load:)",
                at="weight",
            )
        if self.load is None and self.startTime > 0:
            raise problem(
                "entries without their own load share the suite's load and start with it"
                " (expected startTime only next to load:)",
                at="startTime",
            )
        for key in self.tags:
            if key in RESERVED_TAGS:
                raise problem(
                    f"{show(key)} is set by the runner on every record (expected another tag name;"
                    f" reserved: {', '.join(RESERVED_TAGS)})",
                    at=f"tags.{key}",
                )
        return self


EntryName = Annotated[str, Field(pattern=NAME_PATTERN)]


class Suite(FileLoad):
    """A suite: named scenario files sharing a load by weight, or each with its own load in parallel."""

    KEY_HINTS: ClassVar[dict[str, str]] = {
        key: f"a suite has no {key}: it belongs in a scenario file, which the suite names under"
        f" {SUITE_KEY}: {{entry: {{file: x.yaml}}}}"
        for key in _SCENARIO_ONLY
    }

    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    """Names the run folder (default: the file's name)."""
    description: str = ""
    """What the suite exercises."""
    load: LoadSpec | None = Field(
        None,
        description="The load the entries without their own load share (a k6 executor);"
        " or the shortcuts below.",
    )
    # vus, duration, iterations, stages: FileLoad's (listed here in the schema and messages)
    thresholds: Thresholds = {}
    """k6 thresholds over every call of the suite; filter entries with {scenario:<entry>}."""
    scenarios: Annotated[dict[EntryName, SuiteEntry], Field(min_length=1)]
    """The entries by name (lowercase letters, digits, _ and -): {file, weight, load, startTime, tags}."""


@dataclass
class LoadedEntry:
    name: str
    entry: SuiteEntry
    file: Path
    scenarios: list[Scenario]
    """The file's scenarios renamed after the entry (`name`, or `name[...]` per matrix variant)."""


@dataclass
class LoadedSuite:
    suite: Suite
    source: Path
    entries: list[LoadedEntry]
    notes: list[str] = field(default_factory=list)
    """What the run should say: the referenced files' load/thresholds that the suite replaces."""

    @property
    def name(self) -> str:
        return self.suite.name or self.source.stem

    @property
    def shared(self) -> list[LoadedEntry]:
        """Entries without a load of their own (they share the suite's load)."""
        return [e for e in self.entries if e.entry.load is None]

    @property
    def apart(self) -> list[LoadedEntry]:
        """Entries with their own load (each runs in parallel from its startTime)."""
        return [e for e in self.entries if e.entry.load is not None]


def load_suite(path: str | os.PathLike) -> LoadedSuite:
    """A suite file and the scenario files it names, validated. Raises ScenarioError with every
    problem of the suite and of its scenario files, each `file:line:col: what (expected)`."""
    path = Path(path)
    sink = _Sink()
    text, unreadable = read_yaml_text(path)
    if text is None:
        sink.add(0, str(path), *unreadable)
        raise ScenarioError(sink.lines())
    docs = _documents(text, str(path), 0, sink)
    if len(docs) > 1:
        docs[1].add(docs[1].values.get(()), "a second document (expected one suite per file)")
    if not docs:
        raise ScenarioError(sink.lines())
    doc = docs[0]
    data = doc.data
    suite: Suite | None = None
    try:
        suite = Suite.model_validate(data, context={"cross_check": False})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            _report_pydantic(doc, err, False, root=Suite)
    report_thresholds(doc, data.get("thresholds"))
    report_shortcuts(doc, data)

    loaded: list[LoadedEntry] = []
    notes: list[str] = []
    others: list[str] = []  # the scenario files' own problems, already file:line:col
    cache: dict[Path, list[Scenario] | None] = {}
    suites: dict[Path, bool] = {}  # many entries may name one file: each is read once
    total = 0  # scenarios of the entries so far, against MAX_SCENARIOS
    entries = data.get(SUITE_KEY) if isinstance(data.get(SUITE_KEY), dict) else {}
    candidates: list[str] | None = None  # the folder's YAML files, for "no such file" hints
    for name, raw in entries.items():
        if not isinstance(raw, dict):
            continue  # reported by the model
        # as validated: `file: 2024` names the file "2024"
        file_name = suite.scenarios[name].file if suite is not None else raw.get("file")
        if not isinstance(file_name, str):
            continue  # reported by the model
        loc = (SUITE_KEY, name, "file")
        mark = doc.values.get(loc)
        file = path.parent / file_name
        if not file.is_file():
            if candidates is None:
                candidates = sorted(p.name for p in path.parent.glob("*.y*ml") if p != path)
            hint = did_you_mean(file_name, candidates) or (
                "expected a scenario file, relative to the suite file's folder"
                + (f": {', '.join(candidates)}" if 0 < len(candidates) <= 8 else "")
            )
            doc.add(mark, f"{render(loc)}: no such file {show(file_name)} ({hint})")
            continue
        key = file.resolve()
        if key not in suites:
            suites[key] = key == path.resolve() or is_suite_file(file)
        if suites[key]:
            doc.add(mark, f"{render(loc)}: {show(file_name)} is a suite file (expected a scenario file)")
            continue
        if key not in cache:
            try:
                cache[key] = load_scenarios(file)
            except ScenarioError as exc:
                others += exc.problems
                cache[key] = None
        scenarios = cache[key]
        if scenarios is None:
            continue
        total += len(scenarios)
        if total > MAX_SCENARIOS:
            doc.add(
                mark,
                f"{render(loc)}: {show(file_name)} brings the suite to {total:,} scenarios, matrix variants"
                f" counted (expected at most {MAX_SCENARIOS:,}, uvbench's limit: fewer entries or smaller"
                " matrices)",
            )
            break  # the entries after it would only add to the count
        names = sorted({s.base_name for s in scenarios})
        if len(names) > 1:
            doc.add(
                mark,
                f"{render(loc)}: {show(file_name)} holds {len(names)} scenarios ({', '.join(names)})"
                " (expected one scenario per entry; a matrix is fine: give each its own file)",
            )
            continue
        if suite is None:
            continue
        first = scenarios[0]
        unused = [
            what for what, used in (("load:", first.load_spec), ("thresholds:", first.thresholds)) if used
        ]
        if unused:
            notes.append(
                f"suite entry {name}: {file}'s {' and '.join(unused)} not used (a suite's own apply)"
            )
        renamed = [s.model_copy(update={"name": name + s.name[len(s.base_name) :]}) for s in scenarios]
        loaded.append(LoadedEntry(name, suite.scenarios[name], file, renamed))
    if sink.problems or others or suite is None:
        raise ScenarioError(sink.lines() + list(dict.fromkeys(others)))
    return LoadedSuite(suite, path, loaded, notes)


def suite_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a suite file, for `uvbench schema --suite` and editors."""
    schema = Suite.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, **schema, "title": "uvbench suite"}
