"""`load:` and `thresholds:` in scenario and suite files, in k6's vocabulary (its options and thresholds).

A VU is a call slot; an iteration is a call. `load:` names one of k6's executors with k6's own
camelCase keys; k6's top-level shortcuts normalize into it exactly as k6 derives them:

    iterations (+ vus, + duration as maxDuration)  -> shared-iterations
    duration (+ vus)                               -> constant-vus
    stages (+ vus as startVUs)                     -> ramping-vus
    vus alone                                      -> shared-iterations, each scenario --repeat times

Each executor maps onto a `LoadProfile` (`LoadSpec.profile`). Where uvbench differs from k6 it
says so in the field's description: `gracefulStop`/`gracefulRampDown` are unset by default (a call
is a long iteration: every started call finishes unless you cap it), `preAllocatedVUs` is only the
default of `maxVUs` (call slots cost nothing to start), and shared-iterations without
`iterations` runs each scenario `--repeat` times.

CLI flags override the file like k6's tiers (`apply_cli`): --duration, --iterations, --stage or
--arrival-rate replace the file's load (its `vus` carries over, as k6's does); --vus or
--max-in-flight alone change that key of the file's load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from uvbench.scenario.base import Duration, _Model, did_you_mean, problem, show

if TYPE_CHECKING:
    from uvbench.runner.load import LoadProfile

Loc = tuple[Any, ...]


class LoadConfigError(ValueError):
    """A load that cannot be built from the file and the flags together; one line."""


# --------------------------------------------------------------------------------------------
# Durations and counts


def _positive(value: float) -> float:
    if value <= 0:
        raise problem(f"{value:g}s is not a positive duration (expected e.g. 30s, 5m)")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Count = Annotated[int, Field(ge=1)]
Level = Annotated[int, Field(ge=0)]
MAX_ARRIVAL_RATE_PER_S = 1000.0
"""The fastest an open-model load may start calls: a thousand a second is beyond what one machine
carries for long (a pacing process holds 600-800 calls) and far past any Ultravox plan's creation
limits; a higher rate is a typo, refused rather than left to build an unbounded backlog."""


def format_duration(seconds: float | None) -> str | None:
    """k6's form: 90 -> "1m30s", 0.25 -> "250ms", 3600 -> "1h"."""
    if seconds is None:
        return None
    if seconds < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    out += f"{int(minutes)}m" if minutes else ""
    out += f"{round(secs, 3):g}s" if secs or not out else ""
    return out


class StageSpec(_Model):
    """One stage: the level moves linearly to `target` over `duration` (its own length, as in k6)."""

    duration: PositiveDuration
    """Length of this stage (not cumulative)."""
    target: Level
    """VUs (ramping-vus) or calls per timeUnit (ramping-arrival-rate) at the stage's end."""


def _stages_text(stages: list[StageSpec]) -> str:
    return ",".join(f"{format_duration(s.duration)}:{s.target}" for s in stages)


# --------------------------------------------------------------------------------------------
# Executors

EXECUTORS = (
    "constant-vus",
    "ramping-vus",
    "constant-arrival-rate",
    "ramping-arrival-rate",
    "shared-iterations",
    "per-vu-iterations",
)
# k6 scenario keys that do not belong inside uvbench's load:, with where to write them instead.
_MISPLACED = {
    "startTime": "startTime belongs to a suite entry, next to file:; a scenario file's load starts at once",
    "tags": "tags belong to a suite entry, next to file:",
    "exec": "exec has no meaning here: a load runs its scenario file's script",
    "env": "env has no meaning here: use variables: in the scenario file",
    "options": "options has no meaning here",
}


class _Executor(_Model):
    KEY_HINTS: ClassVar[dict[str, str]] = _MISPLACED
    """What the loader says about these unknown keys instead of a did-you-mean."""

    executor: str
    gracefulStop: Duration | None = None
    """Calls still running this long after the load's end are cancelled (k6: 30s by default;
    uvbench: unset, every started call finishes)."""

    # -- what the runner gets ----------------------------------------------------------------

    def profile(self, *, scenarios: int = 1, repeat: int = 1) -> LoadProfile:
        """The `LoadProfile` that runs this load (`scenarios` x `repeat` resolves an unset count)."""
        raise NotImplementedError

    def resolved(self, *, scenarios: int = 1, repeat: int = 1) -> LoadSpec:
        """This load with every default filled in (what a run reports as its `load:`)."""
        return self  # type: ignore[return-value]

    def expanded(self) -> dict[str, Any]:
        """The k6 form: every key, durations as k6 writes them ("1m30s")."""
        out: dict[str, Any] = {}
        for name in sorted(type(self).model_fields, key=_KEY_ORDER.index):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer() and name not in _DURATION_KEYS:
                value = int(value)
            if name in _DURATION_KEYS:
                value = format_duration(value)
            elif name == "stages":
                value = [{"duration": format_duration(s.duration), "target": s.target} for s in value]
            out[name] = value
        return out

    def text(self) -> str:
        """One line: the expanded load in YAML flow style."""
        return yaml.safe_dump(self.expanded(), default_flow_style=True, sort_keys=False, width=10_000).strip()


_DURATION_KEYS = ("duration", "timeUnit", "gracefulStop", "gracefulRampDown", "maxDuration")
_KEY_ORDER = [
    "executor", "vus", "startVUs", "startRate", "rate", "timeUnit", "duration", "iterations", "stages",
    "preAllocatedVUs", "maxVUs", "maxDuration", "gracefulRampDown", "gracefulStop",
]  # fmt: skip


def _runner():  # the runner imports the scenario package: import it only when a profile is made
    from uvbench.runner import load

    return load


class ConstantVus(_Executor):
    """A fixed number of calls in flight for a duration (closed model)."""

    executor: Literal["constant-vus"]
    vus: Count = 1
    """Calls in flight at once."""
    duration: PositiveDuration
    """How long new calls keep starting."""

    def profile(self, *, scenarios: int = 1, repeat: int = 1) -> LoadProfile:
        return _runner().LoadProfile(
            concurrency=self.vus, duration_s=self.duration, graceful_stop_s=self.gracefulStop
        )


class RampingVus(_Executor):
    """Calls in flight ramp linearly through stages (closed model)."""

    executor: Literal["ramping-vus"]
    startVUs: Level = 1
    """Calls in flight at the start, from which the first stage ramps."""
    stages: Annotated[list[StageSpec], Field(min_length=1)]
    """[{duration, target}]: each stage's own length and the VUs at its end."""
    gracefulRampDown: Duration | None = None
    """A call whose VU a ramp-down took away is cancelled after this long (k6: 30s; uvbench:
    unset, it finishes)."""

    def profile(self, *, scenarios: int = 1, repeat: int = 1) -> LoadProfile:
        runner = _runner()
        return runner.LoadProfile(
            stages=tuple(runner.Stage(s.duration, s.target) for s in self.stages),
            start_vus=self.startVUs,
            graceful_stop_s=self.gracefulStop,
            graceful_ramp_down_s=self.gracefulRampDown,
        )


class _ArrivalRate(_Executor):
    timeUnit: PositiveDuration = 1.0
    """The period `rate` is counted in: 30 calls per 1m reads better for voice than 0.5 per 1s."""
    preAllocatedVUs: Count | None = None
    """k6 pre-allocates this many VUs; uvbench starts call slots on demand, so it is only the
    default of maxVUs."""
    maxVUs: Count | None = None
    """Cap on calls in flight; an arrival that finds the cap reached is dropped and counted
    (dropped_calls). Default: preAllocatedVUs; neither set: no cap."""

    @model_validator(mode="after")
    def _caps(self) -> _ArrivalRate:
        if (
            self.maxVUs is not None
            and self.preAllocatedVUs is not None
            and self.maxVUs < self.preAllocatedVUs
        ):
            raise problem(
                f"maxVUs {self.maxVUs} is below preAllocatedVUs {self.preAllocatedVUs}"
                " (expected maxVUs >= preAllocatedVUs)",
                at="maxVUs",
            )
        return self

    def resolved(self, *, scenarios: int = 1, repeat: int = 1) -> LoadSpec:
        if self.maxVUs is None and self.preAllocatedVUs is not None:
            return self.model_copy(update={"maxVUs": self.preAllocatedVUs})  # type: ignore[return-value]
        return self  # type: ignore[return-value]

    @property
    def cap(self) -> int | None:
        return self.maxVUs if self.maxVUs is not None else self.preAllocatedVUs


class ConstantArrivalRate(_ArrivalRate):
    """Calls start at a fixed rate, whatever the agent's latency (open model)."""

    executor: Literal["constant-arrival-rate"]
    rate: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    """Calls started per timeUnit."""
    duration: PositiveDuration | None = None
    """How long calls keep arriving (required unless iterations is set)."""
    iterations: Count | None = None
    """uvbench: stop after this many arrivals (with or instead of duration)."""

    @model_validator(mode="after")
    def _stop(self) -> ConstantArrivalRate:
        if self.duration is None and self.iterations is None:
            raise problem('missing key "duration" (required: how long calls keep arriving)')
        return self

    @model_validator(mode="after")
    def _rate_limit(self) -> ConstantArrivalRate:
        per_s = self.rate / self.timeUnit
        if per_s > MAX_ARRIVAL_RATE_PER_S:
            raise problem(
                f"rate {self.rate:g} per {self.timeUnit:g}s is {per_s:g} calls a second, above uvbench's "
                f"limit of {MAX_ARRIVAL_RATE_PER_S:g}",
                at="rate",
            )
        return self

    def profile(self, *, scenarios: int = 1, repeat: int = 1) -> LoadProfile:
        return _runner().LoadProfile(
            arrival_rate=self.rate / self.timeUnit,
            duration_s=self.duration,
            iterations=self.iterations,
            max_in_flight=self.cap,
            time_unit_s=self.timeUnit,
            graceful_stop_s=self.gracefulStop,
        )


class RampingArrivalRate(_ArrivalRate):
    """The arrival rate ramps linearly through stages (open model)."""

    executor: Literal["ramping-arrival-rate"]
    startRate: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0
    """Calls per timeUnit at the start."""
    stages: Annotated[list[StageSpec], Field(min_length=1)]
    """[{duration, target}]: each stage's own length and the calls per timeUnit at its end."""

    @model_validator(mode="after")
    def _rate_limit(self) -> RampingArrivalRate:
        peak = max([self.startRate, *(stage.target for stage in self.stages)]) / self.timeUnit
        if peak > MAX_ARRIVAL_RATE_PER_S:
            raise problem(
                f"the rate peaks at {peak:g} calls a second, above uvbench's limit of "
                f"{MAX_ARRIVAL_RATE_PER_S:g}",
                at="stages",
            )
        return self

    def profile(self, *, scenarios: int = 1, repeat: int = 1) -> LoadProfile:
        runner = _runner()
        return runner.LoadProfile(
            rate_stages=tuple(runner.Stage(s.duration, s.target) for s in self.stages),
            start_rate=self.startRate,
            time_unit_s=self.timeUnit,
            max_in_flight=self.cap,
            graceful_stop_s=self.gracefulStop,
        )


class SharedIterations(_Executor):
    """A number of calls shared by the VUs: a free VU takes the next call (closed model)."""

    executor: Literal["shared-iterations"]
    vus: Count = 1
    """Calls in flight at once."""
    iterations: Count | None = None
    """Calls in all (k6: 1; uvbench: unset = each scenario once, --repeat times)."""
    maxDuration: PositiveDuration | None = None
    """No call starts after this long (k6: 10m; uvbench: unset = no limit)."""

    def resolved(self, *, scenarios: int = 1, repeat: int = 1) -> SharedIterations:
        if self.iterations is not None:
            return self
        return self.model_copy(update={"iterations": max(1, scenarios * repeat)})

    def profile(self, *, scenarios: int = 1, repeat: int = 1) -> LoadProfile:
        iterations = self.resolved(scenarios=scenarios, repeat=repeat).iterations
        return _runner().LoadProfile(
            concurrency=self.vus,
            iterations=iterations,
            duration_s=self.maxDuration,
            graceful_stop_s=self.gracefulStop,
        )


class PerVuIterations(_Executor):
    """Each VU runs exactly `iterations` calls (closed model)."""

    executor: Literal["per-vu-iterations"]
    vus: Count = 1
    """VU slots."""
    iterations: Count = 1
    """Calls per VU."""
    maxDuration: PositiveDuration | None = None
    """No call starts after this long (k6: 10m; uvbench: unset = no limit)."""

    def profile(self, *, scenarios: int = 1, repeat: int = 1) -> LoadProfile:
        return _runner().LoadProfile(
            concurrency=self.vus,
            iterations=self.vus * self.iterations,
            iterations_per_vu=self.iterations,
            duration_s=self.maxDuration,
            graceful_stop_s=self.gracefulStop,
        )


EXECUTOR_MODELS: dict[str, type[_Executor]] = {
    "constant-vus": ConstantVus,
    "ramping-vus": RampingVus,
    "constant-arrival-rate": ConstantArrivalRate,
    "ramping-arrival-rate": RampingArrivalRate,
    "shared-iterations": SharedIterations,
    "per-vu-iterations": PerVuIterations,
}
LOAD_TAGS: dict[str, type[_Executor]] = {f"load:{name}": model for name, model in EXECUTOR_MODELS.items()}


def _executor_of(data: Any) -> Any:
    """Missing or unknown executors, with a did-you-mean, before the union picks a model."""
    if isinstance(data, _Executor):
        return data
    if not isinstance(data, dict):
        raise problem(
            f"{show(data)} is not valid (expected a mapping: executor: constant-vus, vus: ..., duration: ...)"
        )
    if "executor" not in data:
        shortcut = [k for k in ("vus", "duration", "iterations", "stages") if k in data]
        hint = (
            f"; k6's shortcuts ({', '.join(shortcut)}) go at the top level, without load:" if shortcut else ""
        )
        raise problem('missing key "executor" (expected one of: ' + ", ".join(EXECUTORS) + hint + ")")
    name = data["executor"]
    if name not in EXECUTORS:
        hint = did_you_mean(str(name), EXECUTORS) if isinstance(name, str) else None
        if name == "externally-controlled":
            hint = "uvbench has no control API; supported: " + ", ".join(EXECUTORS)
        raise problem(
            f"unknown executor {show(name)} ({hint or 'expected one of: ' + ', '.join(EXECUTORS)})",
            at="executor",
        )
    return data


def _load_tag(data: Any) -> str | None:
    if isinstance(data, dict):
        return f"load:{data.get('executor')}"
    if isinstance(data, _Executor):
        return f"load:{data.executor}"
    return None


LoadSpec = Annotated[
    Annotated[ConstantVus, Tag("load:constant-vus")]
    | Annotated[RampingVus, Tag("load:ramping-vus")]
    | Annotated[ConstantArrivalRate, Tag("load:constant-arrival-rate")]
    | Annotated[RampingArrivalRate, Tag("load:ramping-arrival-rate")]
    | Annotated[SharedIterations, Tag("load:shared-iterations")]
    | Annotated[PerVuIterations, Tag("load:per-vu-iterations")],
    Discriminator(_load_tag),
    BeforeValidator(_executor_of),
]
"""One of k6's executors, chosen by `executor:`."""


# --------------------------------------------------------------------------------------------
# Shortcuts


SHORTCUTS = ("vus", "duration", "iterations", "stages")
LOAD_KEYS = ("load", *SHORTCUTS, "thresholds")
"""The keys of a scenario or suite file that configure the run rather than a call."""


def from_shortcuts(
    vus: int | None = None,
    duration: float | None = None,
    iterations: int | None = None,
    stages: list[StageSpec] | None = None,
) -> _Executor | None:
    """k6's derivation of an executor from its shortcut options (None when none is set)."""
    if iterations is not None:
        return SharedIterations(
            executor="shared-iterations", vus=vus or 1, iterations=iterations, maxDuration=duration
        )
    if duration is not None:
        return ConstantVus(executor="constant-vus", vus=vus or 1, duration=duration)
    if stages:
        return RampingVus(executor="ramping-vus", startVUs=1 if vus is None else vus, stages=list(stages))
    if vus is not None:
        return SharedIterations(executor="shared-iterations", vus=max(vus, 1))
    return None


def shortcut_problem(model: Any) -> tuple[str, str] | None:
    """A conflict between `load:` and the shortcuts, or between shortcuts: (field, message)."""
    given = [name for name in SHORTCUTS if getattr(model, name) is not None]
    if model.load is not None and given:
        return given[0], (
            "a k6 shortcut next to load: (expected either load: with the executor's keys,"
            " or the shortcuts vus, duration, iterations, stages without load:)"
        )
    if model.stages is not None and (model.duration is not None or model.iterations is not None):
        other = "duration" if model.duration is not None else "iterations"
        return (
            other,
            f"{other} and stages both set (expected one of them: stages set the load's length, as in k6)",
        )
    if model.vus == 0 and model.stages is None:
        return "vus", "0 starts no call (expected at least 1; 0 only as the start of stages)"
    return None


def shortcut_problem_in(data: dict[str, Any]) -> tuple[str, str] | None:
    """`shortcut_problem` on plain file data (so it is reported even when other keys are wrong)."""
    return shortcut_problem(SimpleNamespace(**{k: data.get(k) for k in ("load", *SHORTCUTS)}))


def file_load(model: Any) -> _Executor | None:
    """A scenario's or suite's load: its `load:`, else derived from its shortcuts."""
    if model.load is not None:
        return model.load
    return from_shortcuts(model.vus, model.duration, model.iterations, model.stages)


def in_file_order(names: Iterable[str]) -> list[str]:
    """A scenario's or suite's keys in the order its model declares them: the inherited `FileLoad`
    keys (first in pydantic's field order) just before `thresholds`."""
    names = list(names)
    own = [name for name in names if name in FileLoad.model_fields]
    rest = [name for name in names if name not in FileLoad.model_fields]
    at = rest.index("thresholds") if "thresholds" in rest else len(rest)
    return rest[:at] + own + rest[at:]


def _schema_in_file_order(schema: dict[str, Any], cls: type) -> None:
    properties = schema.get("properties")
    if isinstance(properties, dict):
        schema["properties"] = {name: properties[name] for name in in_file_order(properties)}


class FileLoad(_Model):
    """The top-level load of a scenario or suite file: `load:` or k6's shortcuts (`load_spec`)."""

    model_config = ConfigDict(json_schema_extra=_schema_in_file_order)

    load: LoadSpec | None = None
    """How many calls run and when, as a k6 executor: constant-vus, ramping-vus,
    constant-arrival-rate, ramping-arrival-rate, shared-iterations or per-vu-iterations, with k6's
    keys. Or the shortcuts vus, duration, iterations, stages at the top level. CLI flags override it."""
    vus: Annotated[int, Field(ge=0)] | None = None
    """k6 shortcut: calls in flight (with duration: constant-vus; with stages: their start)."""
    duration: Annotated[Duration, Field(gt=0)] | None = None
    """k6 shortcut: constant-vus for this long (with iterations: their maxDuration)."""
    iterations: Annotated[int, Field(ge=1)] | None = None
    """k6 shortcut: shared-iterations, this many calls in all."""
    stages: Annotated[list[StageSpec], Field(min_length=1)] | None = None
    """k6 shortcut: ramping-vus through [{duration, target}]."""

    @model_validator(mode="after")
    def _load_shortcuts(self) -> Self:
        found = shortcut_problem(self)
        if found:
            raise problem(found[1], at=found[0])
        return self

    @property
    def load_spec(self) -> LoadSpec | None:
        """The file's load in canonical form (`load:`, or derived from the shortcuts), or None."""
        return file_load(self)


# --------------------------------------------------------------------------------------------
# CLI > file


@dataclass(frozen=True)
class CliLoad:
    """The load flags of `uvbench run` (None: not given)."""

    vus: int | None = None
    duration: float | None = None
    iterations: int | None = None
    stages: tuple[tuple[float, int], ...] | None = None
    arrival_rate: float | None = None
    max_in_flight: int | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__dataclass_fields__)


def apply_cli(spec: _Executor | None, cli: CliLoad) -> _Executor:
    """The load a run uses: the file's (`spec`, None if it has none) with the flags applied as k6
    merges tiers. Raises LoadConfigError (one line) for flags that cannot apply."""
    try:
        return _apply_cli(spec, cli)
    except ValueError as exc:  # a pydantic ValidationError of a value out of range
        if isinstance(exc, LoadConfigError):
            raise
        errors = getattr(exc, "errors", None)
        if callable(errors) and errors():  # pydantic's: the field and its message, not its help URL
            first = errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ()))
            reason = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        else:
            reason = str(exc).splitlines()[0]
        raise LoadConfigError(f"the load flags give an invalid load: {reason}") from None


def _apply_cli(spec: _Executor | None, cli: CliLoad) -> _Executor:
    for flag, value in (
        ("--vus", cli.vus),
        ("--iterations", cli.iterations),
        ("--max-in-flight", cli.max_in_flight),
    ):
        if value is not None and value < 1:
            raise LoadConfigError(f"{flag} must be at least 1, got {value}")
    if cli.duration is not None and cli.duration <= 0:
        raise LoadConfigError(f"--duration must be positive, got {cli.duration:g}s")
    if cli.arrival_rate is not None and not 0 < cli.arrival_rate <= MAX_ARRIVAL_RATE_PER_S:
        raise LoadConfigError(
            f"--arrival-rate must be more than 0 and at most {MAX_ARRIVAL_RATE_PER_S:g} calls a second "
            f"(uvbench's limit), got {cli.arrival_rate:g}"
        )
    stages = [StageSpec(duration=d, target=t) for d, t in cli.stages] if cli.stages is not None else None
    replaces = any(v is not None for v in (cli.duration, cli.iterations, cli.stages, cli.arrival_rate))
    if replaces:
        if cli.arrival_rate is not None:
            if stages is not None:
                raise LoadConfigError(
                    "--arrival-rate and --stage: use one (open model or ramping VUs), not both"
                )
            if cli.duration is None and cli.iterations is None:
                raise LoadConfigError("--arrival-rate needs --duration (or --iterations) to stop")
            if cli.vus is not None:
                raise LoadConfigError(
                    "--vus does not apply to an arrival rate (cap the calls in flight with --max-in-flight)"
                )
            cap = cli.max_in_flight
            if cap is None and isinstance(spec, _ArrivalRate):
                cap = spec.cap
            return ConstantArrivalRate(
                executor="constant-arrival-rate",
                rate=cli.arrival_rate,
                duration=cli.duration,
                iterations=cli.iterations,
                maxVUs=cap,
            )
        if cli.max_in_flight is not None:
            raise LoadConfigError("--max-in-flight applies to the open model (with --arrival-rate)")
        if stages is not None and (cli.duration is not None or cli.iterations is not None):
            raise LoadConfigError(
                "--stage sets the load's length: use it without --duration and --iterations (as in k6)"
            )
        vus = cli.vus if cli.vus is not None else getattr(spec, "vus", None)
        derived = from_shortcuts(vus, cli.duration, cli.iterations, stages)
        assert derived is not None
        return derived
    if spec is None:
        if cli.max_in_flight is not None:
            raise LoadConfigError("--max-in-flight applies to the open model (with --arrival-rate)")
        return from_shortcuts(cli.vus) or SharedIterations(executor="shared-iterations")
    updates: dict[str, Any] = {}
    if cli.vus is not None:
        if "vus" not in type(spec).model_fields:
            hint = (
                "set its levels with --stage"
                if isinstance(spec, RampingVus)
                else "cap the calls in flight with --max-in-flight"
            )
            raise LoadConfigError(f"--vus does not apply to the file's {spec.executor} load ({hint})")
        updates["vus"] = cli.vus
    if cli.max_in_flight is not None:
        if not isinstance(spec, _ArrivalRate):
            raise LoadConfigError(
                f"--max-in-flight applies to an arrival-rate load, not the file's {spec.executor} load"
            )
        updates["maxVUs"] = cli.max_in_flight
        if spec.preAllocatedVUs is not None:
            updates["preAllocatedVUs"] = min(spec.preAllocatedVUs, cli.max_in_flight)
    if not updates:
        return spec
    return type(spec).model_validate({**spec.model_dump(), **updates})


# --------------------------------------------------------------------------------------------
# Thresholds


def threshold_problems(thresholds: Any) -> list[tuple[Loc, str, bool]]:
    """Problems of a `thresholds:` mapping as (location under thresholds, message, at the key?),
    checked by `metrics.thresholds.parse_thresholds` entry by entry so each points at its line."""
    from uvbench.metrics.thresholds import ThresholdError, parse_thresholds

    if not isinstance(thresholds, dict):
        return []
    found: list[tuple[Loc, str, bool]] = []

    def strip(text: str, key: str) -> str:
        return text[len(key) + 2 :] if text.startswith(f"{key}: ") else text

    for key, entries in thresholds.items():
        name = str(key).strip()
        try:
            parse_thresholds({name: []})
        except ThresholdError as exc:
            found.append(((key,), strip(exc.problems[0], name), True))
            continue
        if isinstance(entries, list):
            items: list[tuple[Loc, Any]] = [((key, i), entry) for i, entry in enumerate(entries)]
        elif isinstance(entries, str | dict):
            items = [((key,), entries)]
        else:
            found.append(
                (
                    (key,),
                    f'{show(entries)} is not valid (expected a list of expressions, e.g. ["p(95) < 1200"])',
                    False,
                )
            )
            continue
        for loc, entry in items:
            if entry is None or entry == "":
                found.append(
                    (loc, 'no expression (expected e.g. "p(95) < 1200"; quote it: a YAML value'
                     " starting with > is a block scalar)", False)
                )  # fmt: skip
                continue
            try:
                parse_thresholds({name: [entry]})
            except ThresholdError as exc:
                found.append((loc, strip(exc.problems[0], name), False))
    return found


def parsed_thresholds(thresholds: dict[str, Any]) -> list[Any]:
    """The `Threshold` objects of a validated `thresholds:` mapping."""
    from uvbench.metrics.thresholds import parse_thresholds

    return parse_thresholds({str(k).strip(): v for k, v in thresholds.items()})


def _check_thresholds(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    if (info.context or {}).get("cross_check", True):
        found = threshold_problems(value)
        if found:
            raise problem("; ".join(f"thresholds[{loc[0]!r}]: {message}" for loc, message, _ in found))
    return value


_EXPRESSION = {"type": "string", "description": 'k6 syntax: "p(95) < 1200", "rate < 0.01", "max < 500"'}
_ONE_THRESHOLD = {
    "anyOf": [
        _EXPRESSION,
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["threshold"],
            "properties": {
                "threshold": _EXPRESSION,
                "abortOnFail": {"type": "boolean"},
                "delayAbortEval": {"type": "string"},
            },
        },
    ]
}
_THRESHOLDS_SCHEMA = {
    "type": "object",
    "description": "k6 thresholds: metric{tag:value} -> expressions; a breach makes the run exit 1.",
    "additionalProperties": {"anyOf": [_ONE_THRESHOLD, {"type": "array", "items": _ONE_THRESHOLD}]},
}
Thresholds = Annotated[dict[str, Any], AfterValidator(_check_thresholds), WithJsonSchema(_THRESHOLDS_SCHEMA)]
"""k6's mapping: metric (with an optional {tag:value} filter) -> list of expressions."""
