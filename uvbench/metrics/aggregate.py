"""Many calls' figures -> distributions, rates, checks (docs/metrics.md, "Aggregates, rates and checks").

Pure functions over call records (the dicts of `results.jsonl`, see `uvbench.analysis.call.call_record`).

- Every numeric metric gets `Stats` over all the values it takes: a call-level metric one value per
  call, a `turn.*` metric one per turn that was not missed, an `interrupt.*` metric one per barge-in.
  None (not measured) and text values are skipped, never counted as 0.
- Percentiles use linear interpolation between closest ranks (numpy's default "linear" method):
  p(q) of sorted values v[0..n-1] is v at rank q/100 * (n-1), interpolated between its neighbours.
- Invalid calls (outcome "invalid:<reason>": the generator could not measure them) never enter the
  figures or the rates; they are counted and described apart (`invalid`, `invalid_reasons`,
  `invalid_metrics`), and a `warning` is set when they are more than 10 % of the calls.
- Figures set apart in valid calls (`uvbench.metrics.validity`: a record's, turn's or barge-in's
  `set_apart` map) are not in `metrics` either; they are counted per metric and reason (`set_apart`),
  and `set_apart_warning` is set when they are more than 10 % of the valid calls' anchored figures
  (`anchored`: the figures that may be set apart, measured or set apart).
- Rates are `Rate(numerator, denominator)`; `RATES` says what each one counts and over what.
  `audio.underflow_per_min` is the calls' underflows (`call.underflow_count`, summed) per minute of
  all agent audio heard in them (`call.agent_audio_ms`, greeting and every turn, summed): numerator
  and denominator cover the same whole calls. Its value is None below `UNDERFLOW_MIN_AUDIO_S` of
  audio, where one underflow would read as tens per minute. Records without `call.agent_audio_ms`
  (runs from before it was measured) are left out of both.
- Per turn label (`turn_label`: a step's `name:`, else `step<index>`), `turns` holds the `turn.*`
  figures of that label's turns and the `interrupt.*` figures of its barge-ins, with how many there
  were and how many were missed (no reply heard); a missed turn's figures stay out, as overall.
- `checks` counts every expectation of the valid calls pass/fail, k6-style (`uvbench.metrics.checks`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from uvbench.metrics.checks import Checks, count_valid_checks
from uvbench.metrics.validity import CALL_FIGURES, INTERRUPT_FIGURES, REASONS, TURN_FIGURES

INVALID_WARN_SHARE = 0.10
"""More invalid calls than this share of all calls sets `Aggregate.warning`."""
SET_APART_WARN_SHARE = 0.10
"""More set-apart figures than this share of the valid calls' anchored figures sets
`Aggregate.set_apart_warning`."""
UNDERFLOW_MIN_AUDIO_S = 10
"""Less agent audio heard than this (seconds, all calls together) leaves `audio.underflow_per_min`
without a value: a per-minute rate from a few seconds of audio would be mostly noise."""

RATES: dict[str, tuple[str, str]] = {
    "call.success_rate": ("completed calls", "valid calls the run did not interrupt"),
    "call.failed_rate": ("failed calls", "valid calls the run did not interrupt"),
    "turn.miss_rate": ("missed turns", "turns of valid calls"),
    "audio.underflow_per_min": ("underflows", "minutes of agent audio heard (greeting and turns)"),
    "call.any_underflow_rate": ("calls with call.underflow_count > 0", "valid calls measuring it"),
    "call.malformed_rate": ("calls with call.malformed_count > 0", "valid calls measuring it"),
    "call.false_barge_in_rate": (
        "calls with call.false_barge_in_count > 0",
        "valid calls measuring it",
    ),
    "interrupt.success_rate": ("successful barge-ins", "barge-ins with an utterance to interrupt"),
    "expect.passed_rate": ("calls whose expectations all passed", "valid calls with expectations"),
}
"""Every rate: (what its numerator counts, what its denominator counts)."""


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of already sorted values, by linear interpolation; None if empty."""
    if not ordered:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    rank = q / 100 * (len(ordered) - 1)
    lo = math.floor(rank)
    frac = rank - lo
    a = ordered[lo]
    if frac == 0 or lo + 1 >= len(ordered):
        return a
    b = ordered[lo + 1]
    value = a + (b - a) * frac
    return min(max(value, a), b)  # rounding never takes it out of its interval


@dataclass(frozen=True)
class Stats:
    """Distribution of one metric: count, mean, p50, p90, p95, p99, min, max (None when count is 0)."""

    count: int
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None
    values: tuple[float, ...] = field(default=(), repr=False, compare=False)
    """The values, sorted (for other percentiles); not part of `to_json`."""

    @classmethod
    def of(cls, values: Iterable[Any]) -> Stats:
        """Stats of the numbers among `values` (None, text, bools, NaN and infinities are skipped)."""
        return cls._of_numbers([v for v in values if _is_number(v)])

    @classmethod
    def _of_numbers(cls, values: list[Any]) -> Stats:
        """`of` values known to be numbers (`_is_number`)."""
        ordered = tuple(sorted(map(float, values)))
        if not ordered:
            return cls(count=0)
        return cls(
            count=len(ordered),
            mean=min(max(math.fsum(ordered) / len(ordered), ordered[0]), ordered[-1]),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p95=percentile(ordered, 95),
            p99=percentile(ordered, 99),
            min=ordered[0],
            max=ordered[-1],
            values=ordered,
        )

    def percentile(self, q: float) -> float | None:
        return percentile(self.values, q)

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean": self.mean,
            "p50": self.p50,
            "p90": self.p90,
            "p95": self.p95,
            "p99": self.p99,
            "min": self.min,
            "max": self.max,
        }


@dataclass(frozen=True)
class Rate:
    """numerator / denominator; `value` is None when the denominator is 0 or under `min_denominator`."""

    numerator: float
    denominator: float
    min_denominator: float = 0
    """Less denominator than this is too little to say (`audio.underflow_per_min`: 10 s of audio)."""

    @property
    def value(self) -> float | None:
        if not self.denominator or self.denominator < self.min_denominator:
            return None
        return self.numerator / self.denominator

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "numerator": self.numerator, "denominator": self.denominator}


@dataclass(frozen=True)
class TurnFigures:
    """The figures of one turn label: its turns' `turn.*` figures and its barge-ins' `interrupt.*`."""

    turns: int
    """The label's turns and barge-ins in valid calls."""
    missed: int
    """Those with no reply heard (`missed`); a missed turn's figures are not in `metrics`."""
    metrics: dict[str, Stats]

    def to_json(self) -> dict[str, Any]:
        return {
            "turns": self.turns,
            "missed": self.missed,
            "metrics": {k: s.to_json() for k, s in self.metrics.items()},
        }


NO_CHECKS = Checks(passes=0, fails=0, checks=())


def turn_label(item: dict[str, Any]) -> str:
    """A turn's or barge-in's label: its step's `name:`, else `step<index>` (`step3`); `step?` for
    an item that does not say its step."""
    name = item.get("name")
    if name:
        return str(name)
    step = item.get("step")
    return f"step{step}" if type(step) is int else "step?"


@dataclass
class Aggregate:
    """Figures of a set of calls; `groups` holds the same per key when `aggregate(by=...)` was used."""

    calls: int
    valid: int
    invalid: int
    completed: int
    failed: dict[str, int]
    """Valid calls that failed, by reason ("missed_turn", "connect", ...)."""
    metrics: dict[str, Stats]
    """Valid calls only."""
    rates: dict[str, Rate]
    """Valid calls only; keyed by the names of `RATES`."""
    interrupted: int = 0
    """Valid calls the run stopped while they ran (Ctrl-C, a graceful stop): neither passed nor
    failed, so out of the success and failure rates; what they measured is in the figures."""
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    invalid_metrics: dict[str, Stats] = field(default_factory=dict)
    """The invalid calls' own figures, never mixed into `metrics`."""
    set_apart: dict[str, dict[str, int]] = field(default_factory=dict)
    """Valid calls' figures set apart, counted per metric and reason: {"turn.ttfa_ms": {"anchor_late": 3}}."""
    anchored: int = 0
    """Valid calls' anchored figures (those that may be set apart), measured or set apart."""
    turns: dict[str, TurnFigures] = field(default_factory=dict)
    """Valid calls' figures per turn label (`turn_label`), in step order."""
    checks: Checks = NO_CHECKS
    """Valid calls' expectations counted pass/fail per scenario, step and what was expected."""
    groups: dict[Hashable, Aggregate] = field(default_factory=dict)

    @property
    def overall(self) -> Aggregate:
        return self

    @property
    def warning(self) -> str | None:
        """Set when more than 10 % of the calls were invalid; a summary prints it first."""
        if self.calls and self.invalid > INVALID_WARN_SHARE * self.calls:
            return (
                f"{self.invalid} of {self.calls} calls were invalid (generator overloaded): "
                "their figures are reported apart"
            )
        return None

    @property
    def set_apart_total(self) -> int:
        return sum(n for reasons in self.set_apart.values() for n in reasons.values())

    @property
    def set_apart_reasons(self) -> dict[str, int]:
        """The set-apart figures per reason, strongest first."""
        totals = {r: sum(reasons.get(r, 0) for reasons in self.set_apart.values()) for r in REASONS}
        return {r: n for r, n in totals.items() if n}

    @property
    def set_apart_warning(self) -> str | None:
        """Set when more than 10 % of the valid calls' anchored figures were set apart."""
        total = self.set_apart_total
        if self.anchored and total > SET_APART_WARN_SHARE * self.anchored:
            why = ", ".join(f"{r} {n}" for r, n in self.set_apart_reasons.items())
            return (
                f"{total} of {self.anchored} anchored figures of valid calls were set apart ({why}): "
                "the load generator was late around them; they are left out of the figures"
            )
        return None

    @property
    def warnings(self) -> list[str]:
        """Every warning, invalid calls first; a summary prints them first."""
        return [w for w in (self.warning, self.set_apart_warning) if w]

    def rate(self, name: str) -> float | None:
        r = self.rates.get(name)
        return r.value if r is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "warning": self.warning,
            "calls": self.calls,
            "valid": self.valid,
            "invalid": self.invalid,
            "completed": self.completed,
            "interrupted": self.interrupted,
            "failed": dict(self.failed),
            "rates": {k: r.to_json() for k, r in self.rates.items()},
            "metrics": {k: s.to_json() for k, s in self.metrics.items()},
            "invalid_reasons": dict(self.invalid_reasons),
            "invalid_metrics": {k: s.to_json() for k, s in self.invalid_metrics.items()},
            "set_apart_warning": self.set_apart_warning,
            "set_apart": {k: dict(v) for k, v in self.set_apart.items()},
            "set_apart_total": self.set_apart_total,
            "set_apart_reasons": self.set_apart_reasons,
            "anchored": self.anchored,
            "turns": {label: t.to_json() for label, t in self.turns.items()},
            "checks": self.checks.to_json(),
            "groups": {str(k): g.to_json() for k, g in self.groups.items()},
        }


def is_invalid(record: dict[str, Any]) -> bool:
    return str(_outcome(record)).startswith("invalid:")


def aggregate(
    records: Iterable[dict[str, Any]], *, by: str | Callable[[dict[str, Any]], Hashable] | None = None
) -> Aggregate:
    """Figures of all `records`; with `by` (a record key such as "scenario", "stage", "concurrency",
    or a callable record -> key) also per key in `groups` (sorted by key when the keys compare)."""
    records = list(records)
    overall = _aggregate(records)
    if by is not None:
        buckets = _buckets(records, by)
        if len(buckets) == 1 and len(next(iter(buckets.values()))) == len(records):
            # one group of every record (a run of one scenario): its figures are the overall ones
            overall.groups = {k: replace(overall, groups={}) for k in buckets}
        else:
            overall.groups = {k: _aggregate(bucket) for k, bucket in buckets.items()}
    return overall


def _buckets(
    records: Iterable[dict[str, Any]], by: str | Callable[[dict[str, Any]], Hashable]
) -> dict[Hashable, list[dict[str, Any]]]:
    """The records per key of `by`, sorted by key when the keys compare."""
    key_of = by if callable(by) else (lambda r, k=by: _tag(r, k))
    buckets: dict[Hashable, list[dict[str, Any]]] = {}
    for r in records:
        buckets.setdefault(key_of(r), []).append(r)
    keys = list(buckets)
    try:
        keys.sort()  # type: ignore[type-var]
    except TypeError:
        pass
    return {k: buckets[k] for k in keys}


def group_metrics(
    records: Iterable[dict[str, Any]],
    by: str | Callable[[dict[str, Any]], Hashable],
    names: Sequence[str],
) -> dict[Hashable, dict[str, Stats]]:
    """`aggregate(records, by=by).groups[key].metrics[name]` for the named metrics only (those with
    a value), computed without the rest of the aggregate: what a plot of a few metrics needs."""
    out: dict[Hashable, dict[str, Stats]] = {}
    for key, bucket in _buckets(records, by).items():
        values: dict[str, list[Any]] = {name: [] for name in names}
        for r in bucket:  # what `_metric_stats` collects, for these names only
            if is_invalid(r):
                continue
            items = [r.get("metrics")]
            items += [t.get("metrics") for t in r.get("turns") or () if not t.get("missed")]
            items += [b.get("metrics") for b in r.get("barge_ins") or ()]
            for metrics in items:
                if isinstance(metrics, dict):
                    for name, into in values.items():
                        v = metrics.get(name)
                        if v is not None and _is_number(v):
                            into.append(v)
        out[key] = {name: Stats._of_numbers(v) for name, v in values.items() if v}
    return out


def group_rates(
    records: Iterable[dict[str, Any]], by: str | Callable[[dict[str, Any]], Hashable]
) -> dict[Hashable, tuple[int, dict[str, Rate]]]:
    """`(groups[key].valid, groups[key].rates)` of `aggregate(records, by=by)`, computed without the
    rest of the aggregate."""
    out: dict[Hashable, tuple[int, dict[str, Rate]]] = {}
    for key, bucket in _buckets(records, by).items():
        valid = [r for r in bucket if not is_invalid(r)]
        completed = sum(1 for r in valid if _outcome(r) == "completed")
        interrupted = sum(1 for r in valid if _outcome(r) == "interrupted")
        out[key] = (len(valid), _rates(valid, completed, interrupted))
    return out


def _aggregate(records: list[dict[str, Any]]) -> Aggregate:
    valid: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    for r in records:
        (invalid if is_invalid(r) else valid).append(r)
    completed = interrupted = 0
    failed: dict[str, int] = {}
    for r in valid:
        outcome = _outcome(r)
        if outcome == "completed":
            completed += 1
        elif outcome == "interrupted":
            interrupted += 1
        else:
            reason = outcome.removeprefix("failed:") if isinstance(outcome, str) else "unknown"
            failed[reason] = failed.get(reason, 0) + 1
    invalid_reasons: dict[str, int] = {}
    for r in invalid:
        reason = str(_outcome(r)).removeprefix("invalid:")
        invalid_reasons[reason] = invalid_reasons.get(reason, 0) + 1
    set_apart, anchored = _set_apart(valid)
    metrics, turns = _metric_stats(valid, per_turn=True)
    return Aggregate(
        set_apart=set_apart,
        anchored=anchored,
        calls=len(records),
        valid=len(valid),
        invalid=len(invalid),
        completed=completed,
        failed=failed,
        interrupted=interrupted,
        metrics=metrics,
        rates=_rates(valid, completed, interrupted),
        invalid_reasons=invalid_reasons,
        invalid_metrics=_metric_stats(invalid)[0],
        turns=turns,
        checks=count_valid_checks(valid),
    )


def _metric_stats(
    records: list[dict[str, Any]], *, per_turn: bool = False
) -> tuple[dict[str, Stats], dict[str, TurnFigures]]:
    """The records' figures, and with `per_turn` also per turn label (else `{}`)."""
    values: defaultdict[str, list[float]] = defaultdict(list)
    # Turn and barge-in values are collected per (name, step) only, each value read once; the
    # labels and the overall figures are made of these lists at the end.
    items: dict[Any, tuple[defaultdict[str, list[float]], list[int]]] = {}
    """(name, step) -> (values per metric, [items, missed])."""

    def add(metrics: Any, into: defaultdict[str, list[float]]) -> None:
        if not isinstance(metrics, dict):
            return
        for name, v in metrics.items():
            kind = type(v)
            if (kind is float and v - v == 0.0) or kind is int or (kind is not float and _is_number(v)):
                into[name].append(v)

    for r in records:
        add(r.get("metrics"), values)
        for kind, item_list in (("turn", r.get("turns")), ("barge_in", r.get("barge_ins"))):
            for t in item_list or ():
                key = (t.get("name"), t.get("step")) if per_turn else None
                entry = items.get(key)
                if entry is None:
                    entry = items[key] = (defaultdict(list), [0, 0])
                entry[1][0] += 1
                if t.get("missed"):
                    entry[1][1] += 1
                    if kind == "turn":
                        continue  # a missed turn is a verdict, not a latency
                add(t.get("metrics"), entry[0])
    if not per_turn:
        for per_item, _ in items.values():
            for name, v in per_item.items():
                values[name] += v
        return {name: Stats._of_numbers(values[name]) for name in sorted(values)}, {}
    merged: dict[str, tuple[defaultdict[str, list[float]], list[int]]] = {}
    """label -> (values per metric, [items, missed, lowest step])."""
    for (name, step), (per_item, counts) in items.items():
        label = turn_label({"name": name, "step": step})
        step_key = step if type(step) is int else 1 << 30  # unknown steps sort last
        into = merged.get(label)
        if into is None:
            merged[label] = (per_item, [*counts, step_key])
            continue
        for metric, v in per_item.items():
            into[0][metric] += v
        into[1][0] += counts[0]
        into[1][1] += counts[1]
        into[1][2] = min(into[1][2], step_key)
    turns: dict[str, TurnFigures] = {}
    for label, (per_label, counts) in sorted(merged.items(), key=lambda kv: (kv[1][1][2], kv[0])):
        stats = {name: Stats._of_numbers(per_label[name]) for name in sorted(per_label)}
        turns[label] = TurnFigures(turns=counts[0], missed=counts[1], metrics=stats)
        for name, st in stats.items():
            values[name] += st.values  # sorted runs: the overall sort merges them
    return {name: Stats._of_numbers(values[name]) for name in sorted(values)}, turns


def _set_apart(records: list[dict[str, Any]]) -> tuple[dict[str, dict[str, int]], int]:
    """The records' set-apart figures per metric and reason, and their anchored figures (measured
    in `metrics` or set apart; a missed turn's are none: it is a verdict, not a latency)."""
    counts: dict[str, dict[str, int]] = {}
    anchored = 0

    def add(item: dict[str, Any], names: tuple[str, ...]) -> None:
        nonlocal anchored
        metrics = item.get("metrics") if isinstance(item.get("metrics"), dict) else {}
        apart = item.get("set_apart") if isinstance(item.get("set_apart"), dict) else {}
        for name in names:
            v = metrics.get(name)
            if v is not None and _is_number(v):
                anchored += 1
        for name, entry in apart.items():
            reason = str(entry.get("reason")) if isinstance(entry, dict) else "unknown"
            per = counts.setdefault(name, {})
            per[reason] = per.get(reason, 0) + 1
            anchored += 1

    for r in records:
        add(r, CALL_FIGURES)
        for t in r.get("turns") or ():
            if not t.get("missed"):
                add(t, TURN_FIGURES)
        for b in r.get("barge_ins") or ():
            add(b, INTERRUPT_FIGURES)
    return {name: counts[name] for name in sorted(counts)}, anchored


def _rates(valid: list[dict[str, Any]], completed: int, interrupted: int = 0) -> dict[str, Rate]:
    n = len(valid) - interrupted
    turns = [t for r in valid for t in r.get("turns") or ()]
    barge_ins = [b for r in valid for b in r.get("barge_ins") or ()]
    judged = [b for b in barge_ins if b.get("success") is not None]
    underflow_counts = _call_numbers(valid, "call.underflow_count")
    malformed = _call_numbers(valid, "call.malformed_count")
    false_barge_ins = _call_numbers(valid, "call.false_barge_in_count")
    underflows, agent_audio_ms = 0, 0.0
    for r in valid:
        metrics = r.get("metrics") or {}
        audio = metrics.get("call.agent_audio_ms")
        if _is_number(audio):  # a run from before it was measured says nothing of its underflows' rate
            agent_audio_ms += audio
            count = metrics.get("call.underflow_count")
            underflows += count if _is_number(count) else 0
    expected = [r for r in valid if r.get("expectations")]
    return {
        "call.success_rate": Rate(completed, n),
        "call.failed_rate": Rate(n - completed, n),
        "turn.miss_rate": Rate(sum(1 for t in turns if t.get("missed")), len(turns)),
        "audio.underflow_per_min": Rate(
            underflows, agent_audio_ms / 60_000, min_denominator=UNDERFLOW_MIN_AUDIO_S / 60
        ),
        "call.any_underflow_rate": Rate(sum(1 for c in underflow_counts if c > 0), len(underflow_counts)),
        "call.malformed_rate": Rate(sum(1 for c in malformed if c > 0), len(malformed)),
        "call.false_barge_in_rate": Rate(sum(1 for c in false_barge_ins if c > 0), len(false_barge_ins)),
        "interrupt.success_rate": Rate(sum(1 for b in judged if b.get("success")), len(judged)),
        "expect.passed_rate": Rate(
            sum(1 for r in expected if all(e.get("ok") for e in r["expectations"])), len(expected)
        ),
    }


def _call_numbers(records: list[dict[str, Any]], name: str) -> list[float]:
    """The calls' figure `name`, from those that measured it."""
    values = ((r.get("metrics") or {}).get(name) for r in records)
    return [v for v in values if _is_number(v)]


def _outcome(record: dict[str, Any]) -> Any:
    outcome = record.get("outcome")
    if outcome is None:
        outcome = (record.get("metrics") or {}).get("call.outcome")
    return outcome


def _tag(record: dict[str, Any], key: str) -> Any:
    """A record's tag: its own field, else its `tags` map (k6-style), else None."""
    if key in record:
        return record[key]
    tags = record.get("tags")
    return tags.get(key) if isinstance(tags, dict) else None


def _is_number(v: Any) -> bool:
    kind = type(v)
    if kind is float:
        return v - v == 0.0  # finite (an infinity or NaN less itself is NaN)
    if kind is int:
        return True
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
