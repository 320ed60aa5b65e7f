"""Call records -> figures per impairment level (docs/metrics.md, "Per impairment level").

Pure functions over call records (the dicts of `results.jsonl`). A scenario's `caller:` (how the
caller sounds) and `network:` (what the uplink does) tag its calls with a label per dimension
(`tags["caller"]` "snr=20dB", `tags["network"]` "jitter=40ms"); a matrix over them sweeps levels.

- A dimension *varies* when its calls carry two labels or more; a call without the dimension's tag
  (a scenario without `caller:` beside one with it) is at the level `NOT_SET`. A dimension with a
  single label is `constant` (every call had that impairment).
- Each level's figures come from `uvbench.metrics.aggregate` (`group_metrics`, `group_rates`), so
  they equal `aggregate(records, by=<the level>).groups[<level>]`'s: valid calls only, missed turns'
  figures left out, set-apart figures left out, `audio.underflow_per_min` None under its minimum
  audio.
- A level gets a numeric `x` when exactly one matrix axis of its dimension (`caller.*` for the
  caller, `network.*` for the network) varies, its values are numbers and each label has one value;
  the axis name is the x label. Otherwise `x` is the level's position in first-seen order
  (categorical). Levels are listed from the cleanest to the most impaired: a numeric axis by x,
  descending for an SNR (a higher SNR is a quieter room).
- When both dimensions vary, `cross` holds the figures of every (caller level, network level) pair
  with calls, so a plot can draw one line per level of the other dimension.
- At most `MAX_LEVELS` levels per dimension: those with the most calls (first seen first on a tie);
  `left_out` counts the others, whose calls are in no level's figures (still in the aggregate).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from uvbench.metrics.aggregate import Rate, Stats, group_metrics, group_rates, is_invalid

DIMENSIONS = ("caller", "network")
"""The impairment dimensions, each a call tag and the prefix of its matrix axes."""
MAX_LEVELS = 10
"""Levels kept per dimension (the most calls first): a plot's lines and a table's rows stay few."""
NOT_SET = "not set"
"""The level of a call without the dimension's tag."""
LEVEL_METRICS = ("turn.ttfa_ms", "call.false_barge_in_count", "turn.talk_over_ms", "interrupt.talk_over_ms")
"""The distributions a level reports (from `group_metrics`)."""
LEVEL_RATES = ("turn.miss_rate", "call.false_barge_in_rate", "audio.underflow_per_min")
"""The rates a level reports (from `group_rates`)."""


@dataclass(frozen=True)
class LevelFigures:
    """The figures of the calls at one level (or one pair of levels)."""

    calls: int
    valid: int
    invalid: int
    metrics: dict[str, Stats]
    """`LEVEL_METRICS` that have a value."""
    rates: dict[str, Rate]
    """`LEVEL_RATES`."""

    def to_json(self) -> dict[str, Any]:
        ttfa = self.metrics.get("turn.ttfa_ms") or Stats(count=0)
        out: dict[str, Any] = {
            "calls": self.calls,
            "valid": self.valid,
            "invalid": self.invalid,
            "turn.ttfa_ms": {"count": ttfa.count, "p50": ttfa.p50, "p95": ttfa.p95},
            "turn.miss_rate": self.rates["turn.miss_rate"].to_json(),
        }
        false_barge_ins = self.metrics.get("call.false_barge_in_count") or Stats(count=0)
        out["call.false_barge_in_count"] = {"count": false_barge_ins.count, "mean": false_barge_ins.mean}
        out["call.false_barge_in_rate"] = self.rates["call.false_barge_in_rate"].to_json()
        talk_over = self.metrics.get("turn.talk_over_ms") or Stats(count=0)
        out["turn.talk_over_ms"] = {"count": talk_over.count, "mean": talk_over.mean}
        interrupt = self.metrics.get("interrupt.talk_over_ms")
        if interrupt is not None:  # only runs with barge-ins have it
            out["interrupt.talk_over_ms"] = {"count": interrupt.count, "mean": interrupt.mean}
        out["audio.underflow_per_min"] = self.rates["audio.underflow_per_min"].to_json()
        return out


@dataclass(frozen=True)
class Level:
    label: str
    """The dimension's tag ("snr=20dB"), or `NOT_SET`."""
    x: int | float
    """The matrix axis's value (numeric dimension), else the level's first-seen position."""
    figures: LevelFigures

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "x": self.x, **self.figures.to_json()}


@dataclass(frozen=True)
class Dimension:
    name: str
    """"caller" or "network"."""
    axis: str | None
    """The numeric matrix axis the levels' `x` come from ("caller.noise.snr_db"); None: categorical."""
    levels: list[Level]
    """From the cleanest to the most impaired (`x` ascending, descending on an SNR axis)."""
    left_out: int = 0
    """Levels beyond `MAX_LEVELS` (fewest calls), in no figure here."""

    def to_json(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "scale": "numeric" if self.axis else "categorical",
            "levels": [level.to_json() for level in self.levels],
            "left_out": self.left_out,
        }


@dataclass(frozen=True)
class Cell:
    """One caller level crossed with one network level."""

    caller: str
    network: str
    figures: LevelFigures

    def to_json(self) -> dict[str, Any]:
        return {"caller": self.caller, "network": self.network, **self.figures.to_json()}


@dataclass(frozen=True)
class Levels:
    dimensions: dict[str, Dimension]
    """The dimensions that vary, in `DIMENSIONS` order."""
    constant: dict[str, str] = field(default_factory=dict)
    """The dimensions with one label: that label (every call had it)."""
    cross: list[Cell] = field(default_factory=list)
    """Both dimensions vary: every pair of kept levels with calls, caller level first."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "max_levels": MAX_LEVELS,
            "dimensions": {name: d.to_json() for name, d in self.dimensions.items()},
            "constant": dict(self.constant),
        }
        if self.cross:
            out["cross"] = [cell.to_json() for cell in self.cross]
        return out


def level_of(record: dict[str, Any], dimension: str) -> str:
    """The record's level in `dimension`: its tag, else `NOT_SET`."""
    tags = record.get("tags")
    value = tags.get(dimension) if isinstance(tags, dict) else None
    return NOT_SET if value is None else str(value)


def impairment_levels(records: Iterable[dict[str, Any]], max_levels: int = MAX_LEVELS) -> Levels | None:
    """The figures per level of each impairment dimension; None when no call has a caller or
    network tag (a run without impairments)."""
    records = list(records)
    tagged = [d for d in DIMENSIONS if any(level_of(r, d) != NOT_SET for r in records)]
    if not tagged:
        return None
    dimensions: dict[str, Dimension] = {}
    constant: dict[str, str] = {}
    for name in tagged:
        seen = _first_seen(records, name)
        if len(seen) < 2:
            constant[name] = next(iter(seen))
            continue
        dimensions[name] = _dimension(records, name, seen, max_levels)
    cross: list[Cell] = []
    if len(dimensions) == 2:
        caller, network = dimensions["caller"], dimensions["network"]
        kept = (
            {lv.label: k for k, lv in enumerate(caller.levels)},
            {lv.label: k for k, lv in enumerate(network.levels)},
        )

        def pair(r: dict[str, Any]) -> tuple[str, str] | None:
            key = (level_of(r, "caller"), level_of(r, "network"))
            return key if key[0] in kept[0] and key[1] in kept[1] else None

        figures = _figures(records, pair)
        pairs = sorted((k for k in figures if k is not None), key=lambda k: (kept[0][k[0]], kept[1][k[1]]))
        cross = [Cell(c, n, figures[(c, n)]) for c, n in pairs]
    return Levels(dimensions=dimensions, constant=constant, cross=cross)


def _first_seen(records: list[dict[str, Any]], dimension: str) -> dict[str, int]:
    """The dimension's labels in first-seen order, with their calls."""
    seen: dict[str, int] = {}
    for r in records:
        label = level_of(r, dimension)
        seen[label] = seen.get(label, 0) + 1
    return seen


def _dimension(records: list[dict[str, Any]], name: str, seen: dict[str, int], max_levels: int) -> Dimension:
    order = list(seen)
    kept = sorted(order, key=lambda label: (-seen[label], order.index(label)))[:max_levels]
    kept.sort(key=order.index)
    axis, values = _numeric_axis(records, name, kept)
    figures = _figures(records, lambda r: level_of(r, name))
    levels = [Level(label, values[label] if axis else k, figures[label]) for k, label in enumerate(kept)]
    # From the cleanest level to the most impaired: a higher SNR is cleaner, a longer delay is not.
    levels.sort(key=lambda level: -level.x if is_snr_axis(axis) else level.x)
    return Dimension(name, axis, levels, left_out=len(order) - len(kept))


def is_snr_axis(axis: str | None) -> bool:
    """Whether `axis` is a signal-to-noise ratio, on which a higher value is a cleaner call."""
    return bool(axis) and str(axis).endswith("snr_db")


def _numeric_axis(
    records: list[dict[str, Any]], dimension: str, labels: list[str]
) -> tuple[str | None, dict[str, int | float]]:
    """The one matrix axis of `dimension` that varies among the calls at `labels`, with each label's
    value on it; (None, {}) unless there is exactly one such axis, numeric, one value per label."""
    wanted = set(labels)
    if NOT_SET in wanted:  # a call without the impairment has no value on the axis
        return None, {}
    prefix = f"{dimension}."
    per_axis: dict[str, dict[str, set[Any]]] = {}
    """axis -> label -> the values its calls had (a missing axis is a value of None)."""
    for r in records:
        label = level_of(r, dimension)
        if label not in wanted:
            continue
        variant = r.get("variant") if isinstance(r.get("variant"), dict) else {}
        for axis in [a for a in variant if isinstance(a, str) and a.startswith(prefix)] + list(per_axis):
            per_axis.setdefault(axis, {}).setdefault(label, set()).add(_hashable(variant.get(axis)))
    varying = [axis for axis, by_label in per_axis.items() if len(set().union(*by_label.values())) > 1]
    if len(varying) != 1:
        return None, {}
    (axis,) = varying
    values: dict[str, int | float] = {}
    for label in labels:
        at = per_axis[axis].get(label, {None})
        (value,) = at if len(at) == 1 else (None,)
        if not _is_number(value):
            return None, {}
        values[label] = value
    if len(set(values.values())) != len(values):  # two labels on one value: something else varies too
        return None, {}
    return axis, values


def _figures(records: list[dict[str, Any]], key: Any) -> dict[Hashable, LevelFigures]:
    """`LevelFigures` per key of `key(record)`, from the aggregate's own grouping."""
    metrics = group_metrics(records, key, LEVEL_METRICS)
    rates = group_rates(records, key)
    calls: dict[Hashable, list[int]] = {}
    for r in records:
        counts = calls.setdefault(key(r), [0, 0])
        counts[0] += 1
        counts[1] += is_invalid(r)
    return {
        k: LevelFigures(
            calls=n,
            valid=rates[k][0],
            invalid=invalid,
            metrics=metrics.get(k, {}),
            rates={name: rates[k][1][name] for name in LEVEL_RATES},
        )
        for k, (n, invalid) in calls.items()
    }


def _hashable(value: Any) -> Hashable:
    return value if isinstance(value, Hashable) else repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value - value == 0
