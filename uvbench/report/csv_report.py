"""CSV reports: `calls.csv` (one row per call) and `stats.csv` in Locust's `_stats.csv` layout.

`calls_csv` has a row per call: when it started (the run's start from summary.json's `run` object
plus the call's `tags.start_offset_s`, ISO 8601 with the UTC offset, and the offset itself), its
outcome and the outcome's reason, every numeric call-level figure, the mean and max over the call's
turns of every `turn.*` figure and over its barge-ins of every `interrupt.*` figure (all of the
glossary's, measured or not, so runs of the same scenarios have the same header), its
expectations, and one `tag.<key>` column per tag key its run's records have (sorted by key; the
start offset has its own column). An unmeasured figure is an empty cell; every row has every column.

`stats_csv` follows locust's `--csv` stats layout so Locust dashboards and scripts read uvbench runs:
rows keyed by (Type, Name) with Type from {call, turn, barge_in} and Name `<scenario>:<what>`,
response times in ms, median and percentiles as integers (`N/A` when there is no sample), sorted
by name then type, and a last `Aggregated` row with an empty Type. Each row's samples:
- `call` `<scenario>:setup`: call.create_ms + call.join_ms per call; a failure is a failed call
  (`failed:*`). A call without both figures (it never connected) counts as a request and a failure
  with no response time.
- `turn` `<scenario>:ttfa`: turn.ttfa_ms per turn; a failure is a missed turn (no time).
- `barge_in` `<scenario>:clear` / `<scenario>:silence`: interrupt.clear_ms / interrupt.silence_ms
  per barge-in; a failure is a barge-in whose `success` is False.
Invalid calls (`invalid:*`: the generator was overloaded) are left out of `stats.csv`: their
timings measure the load generator, not the agent. Requests/s and Failures/s divide by the run's
wall span: the earliest `anchors.ws_open_ns` to the latest `anchors.ws_closed_ns`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from uvbench.metrics import CALL_METRICS, GLOSSARY, INTERRUPT_METRICS, TURN_METRICS
from uvbench.report.run_folder import run_start

CALL_NUMERIC_METRICS = tuple(name for name in CALL_METRICS if GLOSSARY[name]["unit"] != "text")
"""Every numeric call-level figure of `GLOSSARY`, in glossary order: the metric columns of calls.csv."""
TURN_NUMERIC_METRICS = tuple(name for name in TURN_METRICS if GLOSSARY[name]["unit"] != "text")
"""Every numeric `turn.*` figure: calls.csv has its mean and max over the call's turns."""
INTERRUPT_NUMERIC_METRICS = tuple(name for name in INTERRUPT_METRICS if GLOSSARY[name]["unit"] != "text")
"""Every numeric `interrupt.*` figure of a barge-in: calls.csv has its mean and max over the call's."""
TAG_PREFIX = "tag."
OWN_COLUMN_TAGS = ("start_offset_s",)
"""Tags with a column of their own in calls.csv: no `tag.<key>` column repeats them."""

CALLS_COLUMNS = (
    (
        "scenario",
        "call_id",
        "started_at",
        "start_offset_s",
        "outcome",
        "outcome_detail",
        "passed",
        "duration_ms",
        "end_reason",
    )
    + CALL_NUMERIC_METRICS
    + ("turns",)
    + tuple(f"{name}.{stat}" for name in TURN_NUMERIC_METRICS for stat in ("mean", "max"))
    + ("barge_ins",)
    + tuple(f"{name}.{stat}" for name in INTERRUPT_NUMERIC_METRICS for stat in ("mean", "max"))
    + ("expectations_passed", "expectations_total")
)
"""The columns every calls.csv starts with; the `tag.<key>` columns of its run come after them
(`tag_keys`)."""

PERCENTILES = (0.5, 0.66, 0.75, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)
STATS_COLUMNS = (
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _write(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _number_cell(value: Any) -> Any:
    """`_cell(_number(value))`, the usual types first."""
    kind = type(value)
    if kind is float:
        return value if value - value == 0.0 else ""  # an infinity or NaN less itself is NaN
    if kind is int:
        return value
    return _cell(_number(value))


def _mean_max(items: list[dict[str, Any]], names: Sequence[str]) -> list[Any]:
    """Each figure's mean and max over the items' `metrics` (empty cells when none measured it)."""
    cells: list[Any] = []
    for name in names:
        values = [v for item in items if (v := _number((item.get("metrics") or {}).get(name))) is not None]
        cells += [sum(values) / len(values), max(values)] if values else ["", ""]
    return cells


def _start_offset(record: dict[str, Any]) -> float | None:
    return _number((record.get("tags") or {}).get("start_offset_s"))


def _calls_row(r: dict[str, Any], start: dt.datetime | None) -> list[Any]:
    metrics = r.get("metrics") or {}
    turns = r.get("turns") or []
    barge_ins = r.get("barge_ins") or []
    expectations = r.get("expectations") or []
    offset = _start_offset(r)
    started = None
    if start is not None and offset is not None:
        started = (start + dt.timedelta(seconds=offset)).isoformat(timespec="milliseconds")
    return [
        _cell(r.get("scenario")),
        _cell(r.get("call_id")),
        _cell(started),
        _cell(offset),
        _cell(r.get("outcome")),
        _cell(r.get("outcome_detail")),
        _cell(r.get("passed")),
        _number_cell(r.get("duration_ms")),
        _cell(r.get("end_reason")),
        *[_number_cell(metrics.get(name)) for name in CALL_NUMERIC_METRICS],
        len(turns),
        *_mean_max(turns, TURN_NUMERIC_METRICS),
        len(barge_ins),
        *_mean_max(barge_ins, INTERRUPT_NUMERIC_METRICS),
        sum(1 for e in expectations if e.get("ok")),
        len(expectations),
    ]


def calls_csv_line(record: dict[str, Any], start: dt.datetime | None = None) -> str:
    """A call's cells of `CALLS_COLUMNS` in calls.csv, as `calls_csv` writes them (for
    `calls_csv(..., lines=...)`, which adds the run's tag columns). `start`: the run's start
    (`run_start(summary["run"])`), for the call's start time; without it that cell is empty."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(_calls_row(record, start))
    return out.getvalue()


def tag_keys(records: Iterable[dict[str, Any]]) -> list[str]:
    """The tag keys the records have, sorted, but those with a column of their own."""
    keys: set[str] = set()
    for r in records:
        tags = r.get("tags")
        if isinstance(tags, dict):
            keys.update(str(k) for k in tags)
    return sorted(keys - set(OWN_COLUMN_TAGS))


def _tag_cell(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True)
    return _cell(value)


def calls_csv(
    records: Iterable[dict[str, Any]],
    lines: Sequence[str] | None = None,
    *,
    run: Mapping[str, Any] | None = None,
) -> str:
    """One row per call (columns `CALLS_COLUMNS`, then `tag.<key>` for each of `tag_keys(records)`);
    an unmeasured figure is an empty cell. `run`: the run's summary.json `run` object, whose start
    dates the calls. `lines`: the records' `CALLS_COLUMNS` cells made already (`calls_csv_line`
    with the same start, e.g. by the processes that rebuilt them), one per record."""
    records = list(records)
    if lines is None:
        start = run_start(run)
        lines = [calls_csv_line(r, start) for r in records]
    keys = tag_keys(records)
    head = _write([*CALLS_COLUMNS, *(TAG_PREFIX + k for k in keys)], [])
    if not keys:
        return head + "".join(lines)
    # The tag cells are written apart and joined to each row: `lines` were made without knowing
    # which tags the whole run has.
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rows = [head]
    for record, line in zip(records, lines, strict=True):
        tags = record.get("tags")
        tags = tags if isinstance(tags, dict) else {}
        out.seek(0)
        out.truncate()
        writer.writerow([_tag_cell(tags.get(k)) for k in keys])
        rows.append(line[:-1] + "," + out.getvalue())
    return "".join(rows)


@dataclass
class _Entry:
    type: str
    name: str
    times: list[float] = field(default_factory=list)
    requests: int = 0
    failures: int = 0

    def add(self, time_ms: float | None, failed: bool) -> None:
        self.requests += 1
        self.failures += int(failed)
        if time_ms is not None:
            self.times.append(time_ms)

    def merge(self, other: _Entry) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.times += other.times


def response_time_percentile(times: list[float], fraction: float) -> float | None:
    """Locust's rule: the smallest time such that at most `(1 - fraction)` of the samples exceed it."""
    if not times:
        return None
    ordered = sorted(times)
    count = len(ordered)
    above = max(1, count - int(count * fraction))  # the `above`-th largest sample
    return ordered[count - above]


def _row(entry: _Entry, span_s: float | None) -> list[Any]:
    times = entry.times
    rps = entry.requests / span_s if span_s else 0.0
    fps = entry.failures / span_s if span_s else 0.0
    if times:
        median = round(response_time_percentile(times, 0.5))  # type: ignore[arg-type]
        average: Any = sum(times) / len(times)
        low: Any = min(times)
        high: Any = max(times)
        percentiles: list[Any] = [round(response_time_percentile(times, p)) for p in PERCENTILES]  # type: ignore[arg-type]
    else:
        median, average, low, high = 0, 0, 0, 0
        percentiles = ["N/A"] * len(PERCENTILES)
    return [
        entry.type,
        entry.name,
        entry.requests,
        entry.failures,
        median,
        average,
        low,
        high,
        0,
        rps,
        fps,
        *percentiles,
    ]


def wall_span_s(records: Iterable[dict[str, Any]]) -> float | None:
    """Seconds from the earliest websocket open to the latest websocket close of the records."""
    opens, closes = [], []
    for r in records:
        anchors = r.get("anchors") or {}
        if isinstance(anchors.get("ws_open_ns"), int):
            opens.append(anchors["ws_open_ns"])
        if isinstance(anchors.get("ws_closed_ns"), int):
            closes.append(anchors["ws_closed_ns"])
    if not opens or not closes or max(closes) <= min(opens):
        return None
    return (max(closes) - min(opens)) / 1e9


def _entries(records: list[dict[str, Any]]) -> list[_Entry]:
    entries: dict[tuple[str, str], _Entry] = {}

    def entry(type_: str, name: str) -> _Entry:
        return entries.setdefault((name, type_), _Entry(type_, name))

    for r in records:
        outcome = str(r.get("outcome") or "")
        if outcome.startswith("invalid:"):
            continue
        scenario = r.get("scenario")
        metrics = r.get("metrics") or {}
        create, join = _number(metrics.get("call.create_ms")), _number(metrics.get("call.join_ms"))
        setup = create + join if create is not None and join is not None else None
        entry("call", f"{scenario}:setup").add(setup, outcome.startswith("failed:"))
        for t in r.get("turns") or []:
            ttfa = _number((t.get("metrics") or {}).get("turn.ttfa_ms"))
            entry("turn", f"{scenario}:ttfa").add(ttfa, bool(t.get("missed")))
        for b in r.get("barge_ins") or []:
            m = b.get("metrics") or {}
            failed = b.get("success") is False
            entry("barge_in", f"{scenario}:clear").add(_number(m.get("interrupt.clear_ms")), failed)
            entry("barge_in", f"{scenario}:silence").add(_number(m.get("interrupt.silence_ms")), failed)
    return [entries[key] for key in sorted(entries)]


def stats_csv(records: Iterable[dict[str, Any]]) -> str:
    """The run in Locust's `_stats.csv` layout (columns `STATS_COLUMNS`), `Aggregated` last."""
    records = list(records)
    span = wall_span_s(records)
    entries = _entries(records)
    total = _Entry("", "Aggregated")
    for e in entries:
        total.merge(e)
    return _write(STATS_COLUMNS, [_row(e, span) for e in [*entries, total]])
