"""Baseline comparison: did this run regress against an earlier one? (docs/metrics.md, aggregates).

Sans-I/O: call records in (the dicts of `results.jsonl`), a `Comparison` out. Reading run folders
and printing are the CLI's job (`uvbench compare`, `uvbench run --baseline`).

What is compared. Each metric of `METRICS` (the direction table: which way is worse, its unit):
- a distribution (`turn.ttfa_ms`, `call.first_audio_ms`, ...) at p50, p95 and p99;
- a rate (`call.success_pct`, `turn.miss_pct`, `audio.underflow_per_min`, ...) as its value.
Samples are drawn exactly as `uvbench.metrics.aggregate` draws them, by running `aggregate` on each
call alone: a call-level metric gives one value per call, a `turn.*` metric one per turn not missed,
an `interrupt.*` metric one per barge-in; invalid calls (`invalid:*`) are left out of everything;
a rate is the sum of its per-call numerators over the sum of its denominators (`RATES`). So the
figures here are the figures of `summary.json`.

The rule, per metric and statistic:
1. The difference is current - baseline, of the statistic over all values of each run.
2. Its confidence interval (95 % by default) comes from a bootstrap that resamples *calls*, not
   values: the turns of one call share its connection, its load moment and its agent draw, so they
   are correlated, and resampling them one by one would make the interval too narrow (and the
   verdict too eager). Each run is resampled on its own (the runs are independent samples), 2000
   times by default, with a fixed seed derived from the metric, so the same two runs always give
   the same verdict, whichever other metrics are compared alongside.
3. "regressed" when the whole interval lies on the worse side *beyond the practical minimum*: even
   the most favourable difference the data allow is a real and meaningful loss; "improved"
   symmetrically; otherwise "no change". This is criterion.rs's rule (its confidence interval
   against a noise threshold), and it implies both "the interval lies on the worse side" and "the
   difference exceeds the practical minimum".
   The practical minimum is max(`min_effect` x |baseline value|, a floor in the metric's unit):
   10 % and 20 ms by default, 1 percentage point for a `_pct` rate (no relative part: a share is
   already relative), 0.5 per minute for `audio.underflow_per_min`, 1 for a count.
   Why a practical minimum: with enough calls any difference becomes "significant", including a
   3 ms one nobody can hear; and a run compares many figures at once, so an interval test alone
   (about 2.5 % of chance false alarms on each side of each figure) would cry wolf on a good share
   of unchanged runs. Why 10 %: the local agent's latency jitter (lognormal, sigma 0.25) makes the
   greeting latency vary by about 25 % from call to call; on synthetic runs of that shape, two runs
   of one configuration were called changed about 1 time in 200 with 5 %, about 1 in 1000 with
   10 %, at 12 to 36 calls a run, while a +300 ms shift was called "regressed" every time from
   12 calls on (tests/test_compare.py measures this over many seeds). Pass `min_effect=0.05`
   (`--min-effect 5%`) to catch smaller shifts on runs of many calls.
   What the interval cannot see: whatever moves a whole run at once (a busier machine, a slower
   network that day) is not call-to-call noise; the practical minimum is the margin for it.
4. "not enough data" when the data cannot tell: either run has fewer than `MIN_SAMPLE` (10) calls
   measuring the metric (for a rate: calls adding to it), or fewer values than the statistic
   needs: `MIN_SAMPLE` (10), and for a tail percentile pQ enough values that about `TAIL_VALUES`
   (5) lie beyond it, 5 x 100 / (100 - Q): 100 for p95, 500 for p99. Below that a bootstrap
   interval is no interval: resampling five calls draws the same few values again and again, and
   the bootstrap of a percentile set by its sample's one or two largest values says little about
   the tail. Such rows never make the verdict.
A metric neither run measured is left out. The overall verdict is "regressed" when any gated row
regressed (in the whole run, or in a scenario both runs have when they have several), else
"improved" when any improved, else "no change" when at least one gated row could be judged, else
"not enough data": nothing was checked, and `uvbench compare` says so with an exit code of its own.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from uvbench.metrics.aggregate import aggregate, is_invalid, percentile

REGRESSED, IMPROVED, NO_CHANGE, NOT_ENOUGH_DATA = "regressed", "improved", "no change", "not enough data"
INSUFFICIENT = NOT_ENOUGH_DATA
"""The verdict of a row the data cannot judge (its earlier name)."""
DISTRIBUTION, RATE = "distribution", "rate"
PERCENTILES = ("p50", "p95", "p99")
MIN_SAMPLE = 10
"""Too few: a metric measured by fewer calls than this in either run, or a statistic with fewer
values than this (tail percentiles need more: `TAIL_VALUES`), is "not enough data" (the defaults of
`Settings.min_calls` and `Settings.min_values`)."""
TAIL_VALUES = 5
"""A tail percentile pQ needs this many values beyond it on average: n * (100 - Q) / 100 >= 5."""
OVERALL = "overall"
"""The scope of the whole run's rows (the other scopes are scenario names)."""


@dataclass(frozen=True)
class MetricSpec:
    """One row of the direction table."""

    name: str
    kind: str
    """DISTRIBUTION (compared at p50, p95, p99) or RATE (compared as its value)."""
    unit: str
    """"ms", "count", "%" (a rate in percent) or "/min"."""
    worse: int
    """+1 when a higher value is worse (latency), -1 when a lower one is (success)."""
    default: bool = True
    """Compared (and gating the verdict) when no metric is asked for by name."""
    rate: str | None = None
    """For a RATE: its key in `aggregate.RATES`."""

    @property
    def stats(self) -> tuple[str, ...]:
        return PERCENTILES if self.kind == DISTRIBUTION else ("value",)


def _d(name: str, default: bool = True, unit: str = "ms") -> MetricSpec:
    return MetricSpec(name, DISTRIBUTION, unit, +1, default)


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        # The headline latencies: the agent's answer to a turn, the greeting, barge-in handling.
        _d("turn.ttfa_ms"),
        _d("turn.ttfb_ms"),
        _d("call.first_audio_ms"),
        _d("interrupt.clear_ms"),
        _d("interrupt.silence_ms"),
        _d("interrupt.response_ms"),
        # Rates.
        MetricSpec("call.success_pct", RATE, "%", -1, rate="call.success_rate"),
        MetricSpec("turn.miss_pct", RATE, "%", +1, rate="turn.miss_rate"),
        MetricSpec("audio.underflow_per_min", RATE, "/min", +1, rate="audio.underflow_per_min"),
        MetricSpec("interrupt.success_pct", RATE, "%", -1, rate="interrupt.success_rate"),
        MetricSpec("expect.passed_pct", RATE, "%", -1, rate="expect.passed_rate"),
        MetricSpec("call.false_barge_in_pct", RATE, "%", +1, rate="call.false_barge_in_rate"),
        # On request (--metric): the parts of a turn, call setup, buffering.
        _d("turn.thinking_ms", False),
        _d("turn.agent_transcript_ms", False),
        _d("turn.user_transcript_ms", False),
        _d("turn.underflow_ms", False),
        _d("turn.talk_over_ms", False),
        _d("interrupt.talk_over_ms", False),
        _d("call.create_ms", False),
        _d("call.join_ms", False),
        _d("call.started_ms", False),
        _d("call.ping_rtt_ms", False),
        _d("call.underflow_ms", False),
        _d("call.underflow_count", False, unit="count"),
        _d("call.false_barge_in_count", False, unit="count"),
        MetricSpec("call.any_underflow_pct", RATE, "%", +1, False, rate="call.any_underflow_rate"),
    )
}
"""Every metric `compare` knows: which way is worse, its unit, whether it is compared by default."""

DEFAULT_METRICS = tuple(name for name, spec in METRICS.items() if spec.default)


@dataclass(frozen=True)
class Settings:
    """The rule's parameters (module docstring); every default is what `uvbench compare` uses."""

    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 20_240_605
    min_effect: float = 0.10
    """Practical minimum, relative to the baseline value (0.10 = 10 %); not applied to `%` rates."""
    min_effect_ms: float = 20.0
    """Practical minimum's floor for ms metrics."""
    min_effect_pp: float = 1.0
    """Practical minimum for `_pct` rates, in percentage points."""
    min_effect_per_min: float = 0.5
    """Practical minimum's floor for `audio.underflow_per_min`."""
    min_effect_count: float = 1.0
    """Practical minimum's floor for count metrics."""
    min_calls: int = MIN_SAMPLE
    """Fewer calls measuring a metric in either run: "not enough data"."""
    min_values: int = MIN_SAMPLE
    """Fewer values of a distribution in either run: "not enough data" (tails need more)."""

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, got {self.confidence}")
        if self.resamples < 100:
            raise ValueError(f"resamples must be at least 100, got {self.resamples}")
        if self.min_effect < 0 or self.min_effect_ms < 0 or self.min_effect_pp < 0:
            raise ValueError("the practical minimum cannot be negative")

    def practical_minimum(self, spec: MetricSpec, baseline: float) -> float:
        if spec.unit == "%":
            return self.min_effect_pp
        floor = {"ms": self.min_effect_ms, "/min": self.min_effect_per_min}.get(
            spec.unit, self.min_effect_count
        )
        return max(self.min_effect * abs(baseline), floor)

    def values_needed(self, stat: str) -> int:
        q = float(stat[1:])
        return max(self.min_values, math.ceil(TAIL_VALUES * 100 / (100 - q) - 1e-9))


@dataclass
class Row:
    """One metric and statistic, baseline against current."""

    metric: str
    stat: str
    unit: str
    worse: int
    baseline: float | None
    current: float | None
    diff: float | None
    ci: tuple[float, float] | None
    min_effect: float | None
    verdict: str
    calls: tuple[int, int]
    """Calls measuring the metric: (baseline, current)."""
    values: tuple[int, int]
    """Values of the statistic's sample: (baseline, current); calls for a rate."""
    gated: bool = True
    note: str = ""
    """Why there was not enough data."""

    @property
    def label(self) -> str:
        return self.metric if self.stat == "value" else f"{self.metric} {self.stat}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci) if self.ci else None
        out["calls"], out["values"] = list(self.calls), list(self.values)
        return out


@dataclass
class Scope:
    """The rows of one part of the runs: the whole run (OVERALL) or one scenario."""

    name: str
    calls: tuple[int, int]
    """Valid calls: (baseline, current)."""
    rows: list[Row] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "calls": list(self.calls), "rows": [r.to_json() for r in self.rows]}


@dataclass
class Comparison:
    settings: Settings
    scopes: list[Scope]
    """OVERALL first, then each scenario both runs have (when they have several)."""
    notes: list[str] = field(default_factory=list)
    baseline: str = "baseline"
    current: str = "current"

    def rows(self, verdict: str | None = None) -> list[tuple[Scope, Row]]:
        return [(s, r) for s in self.scopes for r in s.rows if verdict is None or r.verdict == verdict]

    @property
    def regressions(self) -> list[tuple[Scope, Row]]:
        return [(s, r) for s, r in self.rows(REGRESSED) if r.gated]

    @property
    def improvements(self) -> list[tuple[Scope, Row]]:
        return [(s, r) for s, r in self.rows(IMPROVED) if r.gated]

    @property
    def judged(self) -> list[tuple[Scope, Row]]:
        """The gated rows the data could judge."""
        return [(s, r) for s, r in self.rows() if r.gated and r.verdict != NOT_ENOUGH_DATA]

    @property
    def not_judged(self) -> list[tuple[Scope, Row]]:
        """The gated rows with not enough data to judge."""
        return [(s, r) for s, r in self.rows(NOT_ENOUGH_DATA) if r.gated]

    @property
    def verdict(self) -> str:
        if self.regressions:
            return REGRESSED
        if self.improvements:
            return IMPROVED
        return NO_CHANGE if self.judged else NOT_ENOUGH_DATA

    def summary_line(self) -> str:
        """The last line: the verdict word, and which figures moved (or why none could be judged)."""
        verdict = self.verdict
        if verdict == NOT_ENOUGH_DATA:
            unjudged = self.not_judged
            if not unjudged:
                why = "neither run measured a figure compared"
            else:
                scope, first = unjudged[0]
                example = f"{_where(scope)}{first.label}: {first.note}"
                why = f"none of {len(unjudged)} figures could be judged, e.g. {example}"
            return f"compare: {NOT_ENOUGH_DATA} ({why}; run more calls)"
        if verdict == NO_CHANGE:
            judged = len(self.judged)
            unjudged = len(self.not_judged)
            rest = f"; {unjudged} more had not enough data" if unjudged else ""
            return (
                f"compare: {NO_CHANGE} ({judged} figures judged, none moved beyond its practical "
                f"minimum with {self.settings.confidence:.0%} confidence{rest})"
            )
        moved = self.regressions if verdict == REGRESSED else self.improvements
        what = ", ".join(
            f"{_where(s)}{r.label} {format_value(r.diff, r.unit, signed=True)}" for s, r in moved
        )
        return f"compare: {verdict}: {what}"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "baseline": self.baseline,
            "current": self.current,
            "settings": asdict(self.settings),
            "regressed": [{"scope": s.name, "metric": r.metric, "stat": r.stat} for s, r in self.regressions],
            "improved": [{"scope": s.name, "metric": r.metric, "stat": r.stat} for s, r in self.improvements],
            "not_enough_data": [
                {"scope": s.name, "metric": r.metric, "stat": r.stat, "note": r.note}
                for s, r in self.not_judged
            ],
            "notes": list(self.notes),
            "scopes": [s.to_json() for s in self.scopes],
        }


def _where(scope: Scope) -> str:
    return "" if scope.name == OVERALL else f"[{scope.name}] "


# ---------------------------------------------------------------------------------------------
# Samples per call, drawn by `aggregate` itself.


@dataclass(frozen=True)
class CallSample:
    values: dict[str, tuple[float, ...]]
    """Metric -> this call's values (a call-level metric one, a turn metric one per turn, ...)."""
    rates: dict[str, tuple[float, float]]
    """`aggregate.RATES` key -> this call's (numerator, denominator)."""


def call_sample(record: dict[str, Any]) -> CallSample | None:
    """One call's samples as `aggregate` draws them; None for an invalid call (never compared)."""
    if is_invalid(record):
        return None
    agg = aggregate([record])
    if not agg.valid:
        return None
    return CallSample(
        values={name: stats.values for name, stats in agg.metrics.items() if stats.count},
        rates={name: (float(r.numerator), float(r.denominator)) for name, r in agg.rates.items()},
    )


@dataclass
class _Side:
    samples: list[CallSample]

    def distribution(self, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
        """All values, the index of the call each came from, and the number of such calls."""
        values: list[float] = []
        owners: list[int] = []
        n = 0
        for s in self.samples:
            v = s.values.get(metric)
            if v:
                values.extend(v)
                owners.extend([n] * len(v))
                n += 1
        return np.asarray(values, dtype=float), np.asarray(owners, dtype=np.int64), n

    def rate(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-call numerators and denominators of the calls that contribute to the rate."""
        pairs = [
            s.rates[key] for s in self.samples if key in s.rates and (s.rates[key][1] or s.rates[key][0])
        ]
        if not pairs:
            return np.zeros(0), np.zeros(0)
        arr = np.asarray(pairs, dtype=float)
        return arr[:, 0], arr[:, 1]


# ---------------------------------------------------------------------------------------------
# The bootstrap.

_BLOCK_CELLS = 2_000_000
"""Resamples are drawn in blocks of at most this many matrix cells, so memory stays small."""


def _rng(settings: Settings, scope: str, metric: str, side: int) -> np.random.Generator:
    return np.random.default_rng([settings.seed, zlib.crc32(f"{scope}\0{metric}".encode()), side])


def _count_blocks(rng: np.random.Generator, n: int, resamples: int, width: int):
    """Bootstrap resamples of n calls as counts: how often each call is drawn, in (b, n) blocks."""
    pvals = np.full(n, 1.0 / n)
    rows = max(1, min(resamples, _BLOCK_CELLS // max(width, n, 1)))
    for start in range(0, resamples, rows):
        yield rng.multinomial(n, pvals, size=min(rows, resamples - start))


def bootstrap_percentiles(
    values: np.ndarray, owners: np.ndarray, n_calls: int, qs: Sequence[float], rng: np.random.Generator,
    resamples: int,
) -> np.ndarray:  # fmt: skip
    """(resamples, len(qs)): each resample's percentiles of the pooled values of calls drawn with
    replacement (a call drawn k times counts its values k times), by `aggregate.percentile`'s rule."""
    order = np.argsort(values, kind="stable")
    ordered, owner_of = values[order], owners[order]
    m = len(ordered)
    out = np.empty((resamples, len(qs)))
    done = 0
    for counts in _count_blocks(rng, n_calls, resamples, m):
        b = len(counts)
        cum = np.cumsum(counts[:, owner_of], axis=1)  # (b, m): expanded positions covered so far
        total = cum[:, -1]
        big = int(total.max()) + 1
        # Rows laid end to end, each offset past the previous one's largest count: one sorted
        # array, so one searchsorted finds every row's position at once.
        offset = np.arange(b) * big
        flat = (cum + offset[:, None]).ravel()
        start = np.arange(b) * m
        for i, q in enumerate(qs):
            rank = q / 100 * (total - 1)
            lo = np.floor(rank).astype(np.int64)
            frac = rank - lo
            a = ordered[np.searchsorted(flat, lo + offset, side="right") - start]
            hi = ordered[np.searchsorted(flat, np.minimum(lo + 1, total - 1) + offset, side="right") - start]
            out[done : done + b, i] = np.clip(a + (hi - a) * frac, a, hi)
        done += b
    return out


def bootstrap_rate(num: np.ndarray, den: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """(resamples,): sum(num) / sum(den) of calls drawn with replacement (NaN when sum(den) is 0)."""
    out = np.empty(resamples)
    done = 0
    for counts in _count_blocks(rng, len(num), resamples, len(num)):
        b = len(counts)
        n, d = counts @ num, counts @ den
        with np.errstate(invalid="ignore", divide="ignore"):
            out[done : done + b] = np.where(d > 0, n / np.where(d > 0, d, 1), np.nan)
        done += b
    return out


# ---------------------------------------------------------------------------------------------
# Rows.


def _verdict(spec: MetricSpec, ci: tuple[float, float], minimum: float) -> str:
    lo, hi = sorted((ci[0] * spec.worse, ci[1] * spec.worse))  # in "worse" units: > 0 is worse
    if lo > minimum:
        return REGRESSED
    if hi < -minimum:
        return IMPROVED
    return NO_CHANGE


def _ci(diffs: np.ndarray, confidence: float) -> tuple[float, float] | None:
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return None
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return float(lo), float(hi)


def _distribution_rows(
    spec: MetricSpec, base: _Side, cur: _Side, settings: Settings, scope: str
) -> list[Row]:
    bv, bo, bn = base.distribution(spec.name)
    cv, co, cn = cur.distribution(spec.name)
    if not bn and not cn:
        return []
    b_sorted, c_sorted = sorted(bv.tolist()), sorted(cv.tolist())
    qs = [float(s[1:]) for s in spec.stats]
    rows: list[Row] = []
    boot: tuple[np.ndarray, np.ndarray] | None = None
    for stat, q in zip(spec.stats, qs, strict=True):
        b_point, c_point = percentile(b_sorted, q), percentile(c_sorted, q)
        need = settings.values_needed(stat)
        short = _shortage(bn, cn, len(bv), len(cv), settings.min_calls, need)
        row = Row(
            metric=spec.name, stat=stat, unit=spec.unit, worse=spec.worse,
            baseline=b_point, current=c_point,
            diff=None if b_point is None or c_point is None else c_point - b_point,
            ci=None, min_effect=None, verdict=NOT_ENOUGH_DATA,
            calls=(bn, cn), values=(len(bv), len(cv)), gated=True, note=short,
        )  # fmt: skip
        if not short:
            if boot is None:
                rngs = [_rng(settings, scope, spec.name, side) for side in (0, 1)]
                boot = (
                    bootstrap_percentiles(bv, bo, bn, qs, rngs[0], settings.resamples),
                    bootstrap_percentiles(cv, co, cn, qs, rngs[1], settings.resamples),
                )
            i = qs.index(q)
            row.ci = _ci(boot[1][:, i] - boot[0][:, i], settings.confidence)
            row.min_effect = settings.practical_minimum(spec, b_point)
            row.verdict = NOT_ENOUGH_DATA if row.ci is None else _verdict(spec, row.ci, row.min_effect)
        rows.append(row)
    return rows


def _rate_rows(spec: MetricSpec, base: _Side, cur: _Side, settings: Settings, scope: str) -> list[Row]:
    assert spec.rate is not None
    bnum, bden = base.rate(spec.rate)
    cnum, cden = cur.rate(spec.rate)
    if not len(bnum) and not len(cnum):
        return []
    scale = 100.0 if spec.unit == "%" else 1.0

    def point(num: np.ndarray, den: np.ndarray) -> float | None:
        d = float(den.sum())
        return scale * float(num.sum()) / d if d > 0 else None

    b_point, c_point = point(bnum, bden), point(cnum, cden)
    short = _shortage(len(bnum), len(cnum), None, None, settings.min_calls, 0)
    if not short and (b_point is None or c_point is None):
        short = "no denominator in " + ("the baseline" if b_point is None else "the current run")
    row = Row(
        metric=spec.name, stat="value", unit=spec.unit, worse=spec.worse,
        baseline=b_point, current=c_point,
        diff=None if b_point is None or c_point is None else c_point - b_point,
        ci=None, min_effect=None, verdict=NOT_ENOUGH_DATA,
        calls=(len(bnum), len(cnum)), values=(len(bnum), len(cnum)), gated=True, note=short,
    )  # fmt: skip
    if not short:
        b_boot = bootstrap_rate(bnum, bden, _rng(settings, scope, spec.name, 0), settings.resamples)
        c_boot = bootstrap_rate(cnum, cden, _rng(settings, scope, spec.name, 1), settings.resamples)
        row.ci = _ci(scale * (c_boot - b_boot), settings.confidence)
        row.min_effect = settings.practical_minimum(spec, b_point)
        row.verdict = NOT_ENOUGH_DATA if row.ci is None else _verdict(spec, row.ci, row.min_effect)
    return [row]


def _shortage(
    b_calls: int, c_calls: int, b_values: int | None, c_values: int | None, min_calls: int, need: int
) -> str:
    """Why the data cannot be judged ("" when they can)."""
    for who, calls, values in (("baseline", b_calls, b_values), ("current", c_calls, c_values)):
        if calls < min_calls:
            return f"{who}: {calls} calls measure it, {min_calls} needed"
        if values is not None and values < need:
            return f"{who}: {values} values, {need} needed"
    return ""


def compare_scope(
    name: str,
    b_samples: list[Any],
    c_samples: list[Any],
    settings: Settings,
    metrics: Sequence[str],
) -> Scope:
    """One scope's rows, from its calls' samples (`call_sample`, invalid calls already left out)."""
    base, cur = _Side(b_samples), _Side(c_samples)
    scope = Scope(name, (len(b_samples), len(c_samples)))
    for metric in metrics:
        spec = METRICS[metric]
        if spec.kind == DISTRIBUTION:
            scope.rows += _distribution_rows(spec, base, cur, settings, name)
        else:
            scope.rows += _rate_rows(spec, base, cur, settings, name)
    return scope


def compare(
    baseline: Sequence[dict[str, Any]],
    current: Sequence[dict[str, Any]],
    settings: Settings | None = None,
    *,
    metrics: Sequence[str] | None = None,
    baseline_label: str = "baseline",
    current_label: str = "current",
) -> Comparison:
    """Compare two runs' call records (module docstring). `metrics` restricts the comparison to
    these names of `METRICS` (default: `DEFAULT_METRICS`); raises KeyError for an unknown one."""
    settings = settings or Settings()
    names = list(metrics) if metrics else list(DEFAULT_METRICS)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise KeyError(unknown[0])
    comparison = Comparison(settings, [], baseline=baseline_label, current=current_label)
    # Each call's sample once (in the records' order), for the overall scope and its scenario's.
    b_pairs, c_pairs = _samples(baseline), _samples(current)
    comparison.scopes.append(compare_scope(OVERALL, _valid(b_pairs), _valid(c_pairs), settings, names))
    b_by, c_by = _by_scenario(b_pairs), _by_scenario(c_pairs)
    if len(b_by) > 1 or len(c_by) > 1:
        only_b = sorted(set(b_by) - set(c_by))
        only_c = sorted(set(c_by) - set(b_by))
        if only_b:
            comparison.notes.append(f"scenarios only in the baseline: {', '.join(only_b)}")
        if only_c:
            comparison.notes.append(f"scenarios only in the current run: {', '.join(only_c)}")
        if only_b or only_c:
            comparison.notes.append("the overall figures mix different scenarios; compare per scenario")
        common = [s for s in b_by if s in c_by]
        if len(common) > 1:
            for scenario in common:
                comparison.scopes.append(
                    compare_scope(scenario, b_by[scenario], c_by[scenario], settings, names)
                )
    for side, records in (("baseline", baseline), ("current run", current)):
        invalid = sum(1 for r in records if is_invalid(r))
        if invalid:
            comparison.notes.append(f"{invalid} invalid calls of the {side} left out (generator overloaded)")
    return comparison


def _samples(records: Iterable[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(scenario, call sample or None for an invalid call) of each call, in the records' order."""
    return [(str(r.get("scenario")), call_sample(r)) for r in records]


def _valid(pairs: list[tuple[str, Any]]) -> list[Any]:
    return [sample for _, sample in pairs if sample is not None]


def _by_scenario(pairs: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    """Each scenario's valid samples (a scenario whose calls were all invalid is still listed)."""
    out: dict[str, list[Any]] = {}
    for scenario, sample in pairs:
        samples = out.setdefault(scenario, [])
        if sample is not None:
            samples.append(sample)
    return out


def with_settings(settings: Settings | None = None, **changes: Any) -> Settings:
    """`settings` (default: the defaults) with `changes` applied (None values ignored)."""
    return replace(settings or Settings(), **{k: v for k, v in changes.items() if v is not None})


# ---------------------------------------------------------------------------------------------
# Text.


def format_value(value: float | None, unit: str, *, signed: bool = False) -> str:
    """A figure in its unit ("ms", "count", "%", "/min"; any other unit: two decimals, then the
    unit); `signed`, a difference: always signed, percent in points ("+1.5 pp")."""
    if value is None:
        return "—"
    sign = "+" if signed else ""
    if unit == "ms":
        return f"{value:{sign}.0f} ms"
    if unit == "%":
        return f"{value:{sign}.1f}" + (" pp" if signed else "%")
    if unit == "count":
        return f"{value:{sign}.1f}"
    return f"{value:{sign}.2f}{unit}"


def format_ci(ci: tuple[float, float] | None, unit: str) -> str:
    if ci is None:
        return "—"
    digits = {"%": 1, "/min": 2, "count": 1}.get(unit, 0)
    suffix = {"%": " pp", "/min": "/min", "count": ""}.get(unit, " ms")
    return f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]{suffix}"


def table_lines(comparison: Comparison, *, only_moved: bool = False) -> list[str]:
    """The comparison as a table per scope (metric, baseline, current, diff, CI, verdict), then the
    notes and the summary line. `only_moved`: just the rows that regressed or improved."""
    level = f"{comparison.settings.confidence:.0%} CI"
    header = f"  {'metric':<30}{'baseline':>11}{'current':>11}{'diff':>11}  {level:<22}verdict"
    lines: list[str] = []
    for scope in comparison.scopes:
        rows = [r for r in scope.rows if not only_moved or r.verdict in (REGRESSED, IMPROVED)]
        if not rows:
            continue
        title = "OVERALL" if scope.name == OVERALL else f"SCENARIO {scope.name}"
        lines.append(f"{title} ({scope.calls[0]} vs {scope.calls[1]} valid calls)")
        lines.append(header)
        for r in rows:
            verdict = r.verdict + (f" ({r.note})" if r.note else "")
            lines.append(
                f"  {r.label:<30}{format_value(r.baseline, r.unit):>11}{format_value(r.current, r.unit):>11}"
                f"{format_value(r.diff, r.unit, signed=True):>11}  {format_ci(r.ci, r.unit):<22}{verdict}"
            )
    lines += [f"note: {n}" for n in comparison.notes]
    lines.append(comparison.summary_line())
    return lines
