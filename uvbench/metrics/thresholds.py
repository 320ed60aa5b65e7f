"""k6-style gates over a run's call records (docs/metrics.md, "Thresholds").

    thresholds:
      turn.ttfa_ms: ["p(50) < 700", "p(95) < 1200", "p95 < 1200"]
      call.failed: ["rate < 0.01"]                   # = call.failed_rate
      call.success_pct: "> 99"                        # a _pct metric's own value, in percent
      "turn.ttfa_ms{scenario:booking}": ["p(99) < 2000"]
      "turn.ttfa_ms{turn:ask_order}": ["p(95) < 1500"]    # one turn of the script, by its name
      checks: ["rate > 0.99"]                         # every expectation of every call
      call.join_ms: [{threshold: "p(95) < 800", abortOnFail: true, delayAbortEval: 10s}]

Metrics and their aggregations:
- every numeric name of `GLOSSARY` (a distribution, k6's Trend): `avg min med max p(N) count`
  (N in 0..100, decimals allowed; `p95` is short for `p(95)`; `count` is the number of values);
- every rate of `aggregate.RATES` ending `_rate`, also under its name without `_rate` (k6's Rate:
  `call.failed`, `expect.passed`, ...): `rate` (0..1), `value` (the same), `count` (its numerator);
- `<rate name without _rate>_pct` (`call.success_pct`, `interrupt.success_pct`, ...): `value` or a
  bare comparison (`> 99`, in percent), `rate` (0..1), `count`; `interrupt.success_pct` is also a
  per-call distribution in GLOSSARY, so it takes the Trend aggregations too;
- `audio.underflow_per_min` (k6's Gauge): `value` or a bare comparison;
- `checks` (k6's Rate over every expectation checked, `uvbench.metrics.checks`): `rate`, `value`
  (the same), `count` (the passes);
- text metrics (`call.outcome`, `call.end_reason`) take none.

Operators `< <= > >= == === !=` (`===` is `==`); spaces optional. Tag filters `{key:value,...}` keep
the records whose field (or `tags` entry) `key` equals `value` as text: keys in `TAG_KEYS` (`caller` and
`network` are the labels of a call's caller audio and network impairment, e.g.
`turn.ttfa_ms{caller:snr=10dB,network:jitter=30ms,max=120ms}`: a comma starts the next filter only
when a `key:` follows it, so a label's own commas stay in its value). The tag
`turn` is not a record's: it keeps the turns and barge-ins whose label (`aggregate.turn_label`: the
step's `name:`, else `step<index>`) is `value`, so it applies to the per-turn (`turn.*`) and
per-barge-in (`interrupt.*`) distributions only (`turn.ttfa_ms{turn:ask_order}`,
`interrupt.clear_ms{turn:step7}`), with the other tags filtering the calls as usual. The long form's
`abortOnFail` and `delayAbortEval` are parsed and kept; aborting is the runner's job.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from uvbench.metrics.aggregate import RATES, UNDERFLOW_MIN_AUDIO_S, Aggregate, aggregate
from uvbench.metrics.call import GLOSSARY, INTERRUPT_METRICS, TURN_METRICS

TAG_KEYS = ("scenario", "variant", "target", "stage", "concurrency", "vus", "turn", "caller", "network")
TURN_TAG = "turn"
"""The tag that picks turns and barge-ins by label, not calls."""
LONG_FORM_KEYS = ("threshold", "abortOnFail", "delayAbortEval")

TREND_AGGREGATIONS = ("avg", "min", "med", "max", "p(N)", "count")
RATE_AGGREGATIONS = ("rate", "value", "count")
GAUGE = "audio.underflow_per_min"
CHECKS = "checks"
PER_TURN_METRICS = (*TURN_METRICS, *INTERRUPT_METRICS)
"""The distributions with one value per turn or barge-in: those a `turn` tag applies to."""

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "===": operator.eq,
    "!=": operator.ne,
}

TEXT_METRICS = tuple(n for n, g in GLOSSARY.items() if g["unit"] == "text")
TREND_METRICS = tuple(n for n, g in GLOSSARY.items() if g["unit"] != "text")
RATE_NAMES: dict[str, str] = {}
"""Threshold name -> its rate in `aggregate.RATES` (the rate itself, its short form, not the gauge)."""
PCT_NAMES: dict[str, str] = {}
"""`_pct` threshold name -> its rate in `aggregate.RATES`."""
for _rate in RATES:
    if _rate.endswith("_rate"):
        _base = _rate.removesuffix("_rate")
        RATE_NAMES[_rate] = RATE_NAMES[_base] = _rate
        PCT_NAMES[_base + "_pct"] = _rate
KNOWN_METRICS = tuple(dict.fromkeys((*GLOSSARY, *RATES, *RATE_NAMES, *PCT_NAMES, CHECKS)))

_KEY = re.compile(r"^(?P<metric>[^{}]+?)\s*(?:\{(?P<tags>[^{}]*)\})?\s*$")
_EXPR = re.compile(r"^(?P<agg>[^<>=!]*?)\s*(?P<op>===|==|!=|<=|>=|<|>)\s*(?P<num>.*?)\s*$")
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_PCT_ARG = re.compile(r"^p\(\s*(?P<n>[^)]*?)\s*\)$|^p(?P<short>\d+(?:\.\d+)?)$")
_TAG_SEPARATOR = re.compile(r",(?=\s*[A-Za-z_][\w.-]*\s*:)")
"""A comma that starts the next `key:value` of a filter: a value may hold commas of its own (the
network label `jitter=30ms,max=120ms` does), which are not followed by a key and a colon."""
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")


class ThresholdError(ValueError):
    """Thresholds that cannot be evaluated; one line per problem in `problems`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Threshold:
    key: str
    """As written, tag filter included: `turn.ttfa_ms{scenario:booking}`."""
    metric: str
    tags: tuple[tuple[str, str], ...]
    expression: str
    """As written (stripped): `p(95) < 1200`."""
    aggregation: str
    """avg | min | med | max | p | count | rate | value (a bare comparison is `value`)."""
    percentile: float | None
    operator: str
    value: float
    abort_on_fail: bool = False
    delay_abort_eval: str | None = None

    @property
    def label(self) -> str:
        """The aggregation as k6 prints it: `p(95)`, `avg`, `rate`, `value`."""
        if self.aggregation == "p":
            return f"p({_fmt(self.percentile)})"
        return self.aggregation

    @property
    def turn(self) -> str | None:
        """The `turn` tag's label, if any."""
        return next((v for k, v in self.tags if k == TURN_TAG), None)

    @property
    def record_tags(self) -> tuple[tuple[str, str], ...]:
        """The tags that filter records (all but `turn`)."""
        return tuple((k, v) for k, v in self.tags if k != TURN_TAG)

    def matches(self, record: dict[str, Any]) -> bool:
        return all(_tag_text(record, k) == v for k, v in self.record_tags)


@dataclass(frozen=True)
class ThresholdResult:
    threshold: Threshold
    passed: bool
    observed: float | None
    """None when there was no data (then `passed` is False)."""
    observed_text: str
    """`p(95)=1042.3ms`, or `no data: <why>`."""

    @property
    def metric(self) -> str:
        return self.threshold.key

    @property
    def expression(self) -> str:
        return self.threshold.expression

    @property
    def message(self) -> str:
        """One line in k6's style: `✓ turn.ttfa_ms p(95)<1200 p(95)=1042.3ms`."""
        mark = "✓" if self.passed else "✗"
        return f"{mark} {self.metric} {self.expression} {self.observed_text}"

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "expression": self.expression,
            "observed": self.observed,
            "observed_text": self.observed_text,
            "passed": self.passed,
            "message": self.message,
            "abort_on_fail": self.threshold.abort_on_fail,
            "delay_abort_eval": self.threshold.delay_abort_eval,
        }


# ------------------------------------------------------------------------------------------------
# Parsing


def parse_thresholds(
    mapping: Mapping[str, list[str | dict[str, Any]] | str | dict[str, Any]],
) -> list[Threshold]:
    """Every threshold of a `thresholds:` map, or `ThresholdError` listing every problem."""
    out: list[Threshold] = []
    problems: list[str] = []
    for key, entries in mapping.items():
        key = str(key).strip()
        head = _parse_key(key)
        if isinstance(head, str):
            problems.append(head)
            continue
        metric, tags = head
        if isinstance(entries, str | dict):
            entries = [entries]
        if not isinstance(entries, list):
            problems.append(f"{key}: thresholds must be an expression or a list of them")
            continue
        for entry in entries:
            parsed = _parse_entry(key, metric, tags, entry)
            if isinstance(parsed, str):
                problems.append(parsed)
            else:
                out.append(parsed)
    if problems:
        raise ThresholdError(problems)
    return out


def parse_threshold_flags(texts: list[str], flag: str = "--threshold") -> list[Threshold]:
    """Thresholds given on a command line, each 'METRIC: EXPRESSION' (`flag` repeated), or
    `ThresholdError` listing every problem."""
    mapping: dict[str, list[str | dict[str, Any]]] = {}
    malformed = []
    for text in texts:
        # The colon after the metric, not one inside its tag filter (`turn.ttfa_ms{turn:ask}: ...`).
        close = text.find("}")
        split_at = text.find(":", close + 1 if close != -1 and text.find("{") < close else 0)
        metric, sep, expression = (
            (text[:split_at], ":", text[split_at + 1 :]) if split_at != -1 else (text, "", "")
        )
        if not sep or not expression.strip():
            malformed.append(
                f"{flag} {text!r}: expected 'METRIC: EXPRESSION', e.g. 'turn.ttfa_ms: p(95) < 1200'"
            )
            continue
        mapping.setdefault(metric.strip(), []).append(expression.strip())
    if malformed:
        raise ThresholdError(malformed)
    return parse_thresholds(mapping)


def _parse_key(key: str) -> tuple[str, tuple[tuple[str, str], ...]] | str:
    m = _KEY.match(key)
    if m is None:
        return f"{key}: bad tag filter: write metric{{key:value}}, e.g. turn.ttfa_ms{{scenario:booking}}"
    metric = m["metric"].strip()
    if metric not in KNOWN_METRICS:
        close = difflib.get_close_matches(metric, KNOWN_METRICS, n=1, cutoff=0.6)
        return f"{key}: unknown metric" + (f" (did you mean {close[0]}?)" if close else "")
    tags: list[tuple[str, str]] = []
    if m["tags"] is not None:
        for part in _TAG_SEPARATOR.split(m["tags"]):
            name, colon, value = (s.strip() for s in part.partition(":"))
            if not colon or not name or not value:
                return (
                    f'{key}: bad tag filter "{part.strip()}": write {{key:value}}, e.g. {{scenario:booking}}'
                )
            if name not in TAG_KEYS:
                return f'{key}: unknown tag "{name}" (tags: {", ".join(TAG_KEYS)})'
            tags.append((name, value))
    turns = [v for k, v in tags if k == TURN_TAG]
    if turns and metric not in PER_TURN_METRICS:
        return (
            f"{key}: the turn tag picks turns and barge-ins, so it takes a turn.* or interrupt.* "
            f"figure (e.g. turn.ttfa_ms{{turn:{turns[0]}}}); {metric} is {_not_per_turn(metric)}"
        )
    if len(turns) > 1:
        return f"{key}: one turn per threshold: write one threshold per turn label"
    return metric, tuple(tags)


def _not_per_turn(metric: str) -> str:
    """What `metric` is, for a `turn` tag that does not apply to it."""
    if metric == CHECKS:
        return "counted per expectation (filter it by scenario)"
    if metric == GAUGE:
        return "a rate over the calls' whole audio"
    if metric in RATE_NAMES or metric in PCT_NAMES:
        return "a rate over calls or turns, not per turn label"
    return "one value per call"


def _parse_entry(key: str, metric: str, tags: tuple[tuple[str, str], ...], entry: Any) -> Threshold | str:
    abort, delay = False, None
    if isinstance(entry, dict):
        unknown = [k for k in entry if k not in LONG_FORM_KEYS]
        if unknown:
            return f'{key}: unknown key "{unknown[0]}" in long form (keys: {", ".join(LONG_FORM_KEYS)})'
        if "threshold" not in entry:
            return f'{key}: long form needs a "threshold" key, e.g. {{threshold: "p(95) < 1200"}}'
        abort, delay, entry = entry.get("abortOnFail", False), entry.get("delayAbortEval"), entry["threshold"]
        if not isinstance(abort, bool):
            return f"{key}: abortOnFail must be true or false, not {abort!r}"
        if delay is not None and not (isinstance(delay, str) and _DURATION.match(delay.strip())):
            return f'{key}: delayAbortEval {delay!r} is not a duration (e.g. "10s", "1m")'
        delay = delay.strip() if delay is not None else None
    if not isinstance(entry, str):
        return f'{key}: a threshold must be a string like "p(95) < 1200", not {entry!r}'
    expression = entry.strip()
    where = f'{key}: "{expression}"'
    m = _EXPR.match(expression)
    if m is None or not _NUMBER.match(m["num"]):
        return f'{where}: cannot parse: write <aggregation> <operator> <number>, e.g. "p(95) < 1200"'
    agg_text, op, value = m["agg"].strip(), m["op"], float(m["num"])
    pct = None
    if agg_text == "":
        agg = "value"
    elif agg_text in ("avg", "min", "med", "max", "count", "rate", "value"):
        agg = agg_text
    elif pm := _PCT_ARG.match(agg_text):
        arg = pm["n"] if pm["n"] is not None else pm["short"]
        if not _NUMBER.match(arg):
            return f'{where}: percentile "{arg}" is not a number'
        pct = float(arg)
        if not 0 <= pct <= 100:
            return f"{where}: percentile {_fmt(pct)} is outside 0..100"
        agg = "p"
    else:
        known = "avg, min, med, max, p(N), count, rate, value"
        return f'{where}: unknown aggregation "{agg_text}" (aggregations: {known})'
    label = f"p({_fmt(pct)})" if agg == "p" else agg
    if metric in TEXT_METRICS:
        what = "bare comparison" if agg_text == "" else label
        return (
            f"{where}: {metric} is a text metric and takes no {what}; "
            "gate on call.success_rate or call.failed_rate"
        )
    allowed = _aggregations(metric)
    if agg not in allowed:
        if agg_text == "":
            return (
                f"{where} lacks an aggregation (only _pct and rate metrics take a bare comparison): "
                f'write e.g. "p(95) {op} {m["num"]}"; for a share of calls use a rate metric '
                '(call.success_rate: "rate > 0.99")'
            )
        names = ", ".join("p(N)" if a == "p" else a for a in allowed)
        return f"{where}: {label} does not apply to {metric} (use {names})"
    num = m["num"]
    if metric in RATE_NAMES and agg in ("rate", "value") and not 0 <= value <= 1:
        pct_name = RATE_NAMES[metric].removesuffix("_rate") + "_pct"
        written = f"{label} " if agg_text else ""
        fix = f'"{written}{op} {_fmt(value / 100)}", or {pct_name}: "{op} {num}"'
        return f"{where}: a rate runs 0..1: write {fix}"
    if metric in PCT_NAMES and agg == "rate" and not 0 <= value <= 1:
        return f'{where}: a rate runs 0..1: write "rate {op} {_fmt(value / 100)}", or "{op} {num}" (percent)'
    if metric in PCT_NAMES and agg == "value" and not 0 <= value <= 100:
        return f"{where}: a percentage runs 0..100"
    if metric == CHECKS and agg in ("rate", "value") and not 0 <= value <= 1:
        return f'{where}: a rate runs 0..1: write "{label} {op} {_fmt(value / 100)}"'
    return Threshold(
        key=key,
        metric=metric,
        tags=tags,
        expression=expression,
        aggregation=agg,
        percentile=pct,
        operator=op,
        value=value,
        abort_on_fail=abort,
        delay_abort_eval=delay,
    )


def _aggregations(metric: str) -> tuple[str, ...]:
    """The aggregations a metric takes (`p` stands for p(N))."""
    out: list[str] = []
    if metric in TREND_METRICS:
        out += ["avg", "min", "med", "max", "p", "count"]
    if metric in RATE_NAMES or metric in PCT_NAMES:
        out += ["rate", "value", "count"]
    if metric == GAUGE:
        out += ["value"]
    if metric == CHECKS:
        out += ["rate", "value", "count"]
    return tuple(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------------
# Evaluation


def evaluate(thresholds: Iterable[Threshold], records: Iterable[dict[str, Any]]) -> list[ThresholdResult]:
    """Each threshold against the records its tag filter keeps (invalid calls never count); with a
    `turn` tag, against those records' turns and barge-ins of that label."""
    records = list(records)
    cache: dict[tuple[tuple[str, str], ...], tuple[list[dict[str, Any]], Aggregate]] = {}
    results = []
    for t in thresholds:
        tags = t.record_tags
        if tags not in cache:
            kept = [r for r in records if t.matches(r)]
            cache[tags] = (kept, aggregate(kept))
        kept, agg = cache[tags]
        results.append(_evaluate_one(t, kept, agg))
    return results


def _evaluate_one(t: Threshold, kept: list[dict[str, Any]], agg: Aggregate) -> ThresholdResult:
    if not kept:
        where = "{" + ",".join(f"{k}:{v}" for k, v in t.record_tags) + "}"
        return _no_data(t, f"no calls match {where}" if t.record_tags else "no calls")
    if agg.valid == 0:
        return _no_data(t, f"all {len(kept)} calls were invalid" if len(kept) > 1 else "the call was invalid")
    calls = f"{agg.valid} valid call" + ("s" if agg.valid != 1 else "")
    observed: float | None
    unit = ""
    if t.aggregation in ("avg", "min", "med", "max", "p") or (
        t.aggregation == "count" and t.metric in TREND_METRICS
    ):
        label = t.turn
        if label is None:
            stats = agg.metrics.get(t.metric)
        else:
            figures = agg.turns.get(label)
            stats = figures.metrics.get(t.metric) if figures is not None else None
        count = stats.count if stats is not None else 0
        if t.aggregation == "count":
            observed = float(count)
        elif label is not None and label not in agg.turns:
            return _no_data(t, f"no turn or barge-in labelled {label} in {calls}")
        elif stats is None or count == 0:
            of_turn = f" of turn {label}" if label is not None else ""
            return _no_data(t, f"no {t.metric} value{of_turn} in {calls}")
        else:
            observed = {
                "avg": stats.mean,
                "min": stats.min,
                "max": stats.max,
                "med": stats.p50,
                "p": stats.percentile(t.percentile or 0),
            }[t.aggregation]
            unit = _unit(t.metric)
    elif t.metric == CHECKS:
        checks = agg.checks
        if t.aggregation == "count":
            observed = float(checks.passes)
        elif checks.rate is None:
            return _no_data(t, f"no expectation checked in {calls}")
        else:
            observed = checks.rate
    else:
        rate_name = GAUGE if t.metric == GAUGE else RATE_NAMES.get(t.metric) or PCT_NAMES[t.metric]
        rate = agg.rates[rate_name]
        if t.aggregation == "count":
            observed = float(rate.numerator)
        elif rate_name == GAUGE and rate.value is None and rate.denominator:
            heard = _fmt(rate.denominator * 60)
            return _no_data(
                t, f"{heard} s of agent audio heard, under the {UNDERFLOW_MIN_AUDIO_S} s it needs ({calls})"
            )
        elif rate.value is None:
            return _no_data(t, f"{rate_name} has no {RATES[rate_name][1]} ({calls})")
        elif t.aggregation == "value" and t.metric in PCT_NAMES:
            observed, unit = rate.value * 100, "%"
        else:
            observed = rate.value
            unit = "/min" if t.metric == GAUGE else ""
    assert observed is not None
    passed = OPERATORS[t.operator](observed, t.value)
    return ThresholdResult(t, passed, observed, f"{t.label}={_fmt(observed)}{unit}")


def _no_data(t: Threshold, why: str) -> ThresholdResult:
    return ThresholdResult(t, False, None, f"no data: {why}")


def _unit(metric: str) -> str:
    if metric.endswith("_ms"):
        return "ms"
    if metric.endswith("_pct"):
        return "%"
    return ""


def _fmt(v: float | None) -> str:
    """1042.3, 1042, 0.0123: two decimals at most for 1 and above, four significant digits below."""
    if v is None:
        return "None"
    if v == int(v):
        return str(int(v))
    if abs(v) >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.4g}"


def _tag_text(record: dict[str, Any], key: str) -> str | None:
    v = record.get(key)
    if v is None and isinstance(record.get("tags"), dict):
        v = record["tags"].get(key)
    if v is None:
        return None
    if isinstance(v, float) and v == int(v):
        v = int(v)
    return str(v)
