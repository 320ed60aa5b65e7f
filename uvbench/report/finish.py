"""The end of a run: aggregates, gates, and the report files CI servers and people read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvbench.metrics.aggregate import Aggregate, aggregate
from uvbench.metrics.thresholds import Threshold, ThresholdResult, evaluate
from uvbench.report.csv_report import calls_csv, stats_csv
from uvbench.report.history import history_for_run, record_finished_run
from uvbench.report.junit import junit_xml
from uvbench.report.run_folder import generator_failures

SIDE_MIN_RECORDS = 1000
"""From this many calls on, a forked process draws the page's figures that need only the records,
then writes calls.csv, stats.csv and junit.xml, while this one computes the aggregate and writes the
summary and the page (when this process can fork: Linux, no other thread)."""

HEADLINE = (
    "turn.ttfa_ms",
    "turn.ttfb_ms",
    "interrupt.clear_ms",
    "interrupt.silence_ms",
    "call.first_audio_ms",
)


@dataclass
class Finished:
    results: list[ThresholdResult] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    """What to print: any warning first, then the thresholds block, then the headline figures."""

    @property
    def thresholds_passed(self) -> bool:
        return all(r.passed for r in self.results)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def set_apart_line(overall: Aggregate) -> str | None:
    """How many figures of valid calls were set apart and why, most first; None when none was."""
    if not overall.set_apart_total:
        return None
    by_metric = sorted(overall.set_apart.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    shown = "; ".join(
        f"{name} " + ", ".join(f"{reason} {n}" for reason, n in reasons.items())
        for name, reasons in by_metric[:4]
    )
    more = f"; {len(by_metric) - 4} more metrics" if len(by_metric) > 4 else ""
    why = ", ".join(f"{r} {n}" for r, n in overall.set_apart_reasons.items())
    return (
        f"  set apart (not in the figures): {overall.set_apart_total} of {overall.anchored} anchored"
        f" figures ({why}): {shown}{more}"
    )


def _write_tables(
    folder: Path,
    records: list[dict[str, Any]],
    results: list[ThresholdResult],
    tables: Any = None,
    dead: Sequence[str] = (),
) -> None:
    """calls.csv, stats.csv and junit.xml; `dead`: the run's failed pacing processes."""
    lines, cases = (tables.csv_lines, tables.cases) if tables is not None else (None, None)
    (folder / "calls.csv").write_text(calls_csv(records, lines=lines))
    (folder / "stats.csv").write_text(stats_csv(records))
    junit = junit_xml(records, threshold_results=results, cases=cases, generator_failures=dead)
    (folder / "junit.xml").write_text(junit)


def _side_work(
    folder: Path,
    records: list[dict[str, Any]],
    results: list[ThresholdResult],
    tables: Any,
    dead: Sequence[str],
) -> Any:
    """In a big run, a forked process drawing the page's figures that need only the records, then
    writing the tables (`html.start_figures`); None when there is none (this process does it)."""
    if len(records) < SIDE_MIN_RECORDS:  # matplotlib is imported only when a page is drawn
        return None
    try:
        from uvbench.report.html import start_figures

        def tables_then() -> None:
            _write_tables(folder, records, results, tables, dead)

        return start_figures(folder, records, then=tables_then)
    except Exception:  # this process does it all
        return None


def finish_run(
    folder: Path,
    records: list[dict[str, Any]],
    thresholds: list[Threshold],
    extra: dict[str, Any] | None = None,
    *,
    tables: Any = None,
) -> Finished:
    """Write summary.json (with aggregates and gates), calls.csv, stats.csv, junit.xml and report.html.

    `extra` (e.g. `{"load": ...}` or `{"knee": ...}`) is merged into the runner's summary.json ahead
    of the aggregate and the gates, in the file's one rewrite. `tables`: the records' rows and
    testcases made already (`uvbench.report.rebuild.Tables`)."""
    finished = Finished(results=evaluate(thresholds, records) if thresholds else [])
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    dead = generator_failures(summary)
    side = _side_work(folder, records, finished.results, tables, dead)  # figures, tables, meanwhile
    overall = aggregate(records, by="scenario")
    finished.lines.extend(f"uvbench: warning: {w}" for w in overall.warnings)
    if finished.results:
        finished.lines.append("THRESHOLDS")
        finished.lines.extend(f"  {r.message}" for r in finished.results)
    measured = [(n, s) for n in HEADLINE if (s := overall.metrics.get(n)) is not None and s.count]
    if measured:  # no header over nothing (a run whose calls were never created)
        finished.lines.append("TOTALS (valid calls)          count    p50    p95    p99    max")
    for name, stats in measured:
        finished.lines.append(
            f"  {name:<28}{stats.count:>5} {_fmt(stats.p50):>6} {_fmt(stats.p95):>6}"
            f" {_fmt(stats.p99):>6} {_fmt(stats.max):>6} ms"
        )
    line = set_apart_line(overall) if records else None
    if line:
        finished.lines.append(line)
    summary.update(extra or {})
    summary["aggregate"] = overall.to_json()
    summary["thresholds"] = [r.to_json() for r in finished.results]
    summary_path.write_text(json.dumps(summary, indent=2))
    if side is None:
        _write_tables(folder, records, finished.results, tables, dead)
    history_warning = record_finished_run(folder, records, overall)  # <out>/history.sqlite, upsert by run id
    if history_warning:
        finished.lines.append(f"uvbench: warning: {history_warning}")
    try:  # the page is the last file: a problem drawing it must not lose the run's verdict
        from uvbench.report.html import write_html_report  # imports matplotlib: only when writing
        from uvbench.report.plots import HISTORY_METRICS, HISTORY_STATS

        history = history_for_run(folder, HISTORY_METRICS, HISTORY_STATS)
        write_html_report(folder, records, summary, history=history, overall=overall, figures=side)
    except Exception as exc:
        finished.lines.insert(0, f"uvbench: warning: report.html not written ({type(exc).__name__}: {exc})")
    if side is not None and not side.finish():  # the helper failed: the tables are written here
        _write_tables(folder, records, finished.results, tables, dead)
    return finished
