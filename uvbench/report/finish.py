"""The end of a run: aggregates, gates, and the report files CI servers and people read."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvbench.metrics.aggregate import UNDERFLOW_MIN_AUDIO_S, Aggregate, TurnFigures, aggregate
from uvbench.metrics.checks import Checks
from uvbench.metrics.levels import impairment_levels
from uvbench.metrics.thresholds import Threshold, ThresholdResult, evaluate
from uvbench.report.csv_report import calls_csv, stats_csv, wall_span_s
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
TREND_COLUMNS = ("avg", "min", "med", "p(90)", "p(95)", "max")
"""k6's trend columns, in ms; a count goes first."""
NAME_WIDTH = 30
"""Dotted names (`turn.ttfa_ms.......: `) are padded to this many characters, or the longest name's."""
RATE_LINES = (
    ("call.success", "call.success_rate"),
    ("turn.miss", "turn.miss_rate"),
    ("interrupt.success", "interrupt.success_rate"),
)
"""The rates shown, by their threshold names (k6's Rate: the share, then ✓ passes ✗ fails)."""
SHOWN_FAILING_CHECKS = 10
"""Failing checks listed under the checks line; report.html lists them all."""
SHOWN_TURNS = 10
DETAIL_CHARS = 90
"""A failed call's detail is cut to this many characters: one line each."""


@dataclass
class Finished:
    results: list[ThresholdResult] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    """What to print (`end_summary`): any warning first, then the thresholds block, then the
    checks, figures and rates as k6 prints its end-of-test summary; the set-apart line last."""

    @property
    def thresholds_passed(self) -> bool:
        return all(r.passed for r in self.results)


def _fmt(value: float | None) -> str:
    """A figure in ms: whole ms, a tenth under 10 ms (a clear or a ping is often a few ms)."""
    if value is None:
        return "—"
    return f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"


def _pct(rate: float) -> str:
    return f"{rate * 100:.2f}%"


def _duration(seconds: float) -> str:
    """k6's way: `42.3s`, `1m02.5s`, `1h05m10s`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{secs:04.1f}s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h{minutes:02d}m{int(secs):02d}s"


def _short(text: str, limit: int = DETAIL_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_duration_s(summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> float | None:
    """The run's duration: summary.json's `run.duration_s`; for a folder written before it was
    kept, the run's start to the end of its last call (`start_offset_s` + the call's duration), else
    the calls' wall span (first websocket open to last close)."""
    run = summary.get("run")
    if isinstance(run, dict) and isinstance(run.get("duration_s"), (int, float)) and run["duration_s"] > 0:
        return float(run["duration_s"])
    ends = []
    for r in records:
        offset = (r.get("tags") or {}).get("start_offset_s")
        length = r.get("duration_ms") or (r.get("metrics") or {}).get("call.duration_ms")
        if isinstance(offset, (int, float)) and isinstance(length, (int, float)):
            ends.append(offset + length / 1000)
    if ends and max(ends) > 0:
        return max(ends)
    return wall_span_s(records)


_UNNAMED = re.compile(r"step(\d+|\?)")


def _turn_labels(turns: dict[str, TurnFigures]) -> list[str]:
    """The labels of turns (not barge-ins, whose figures are `interrupt.*`), in step order."""
    return [
        label
        for label, figures in turns.items()
        if figures.missed or any(name.startswith("turn.") for name in figures.metrics)
    ]


def _per_turn_wanted(overall: Aggregate) -> bool:
    """Per-turn lines only say something when a scenario names its turns or has more than one."""
    for group in overall.groups.values() or [overall]:
        labels = _turn_labels(group.turns)
        if len(labels) > 1 or any(not _UNNAMED.fullmatch(label) for label in labels):
            return True
    return False


def check_lines(checks: Checks, *, indent: str = "    ") -> list[str]:
    """The failing checks, one line each (fails/total and one failed call's detail), at most
    `SHOWN_FAILING_CHECKS`, then how many more the report lists."""
    failing = [c for c in checks.checks if c.fails]
    several = len({c.scenario for c in checks.checks}) > 1
    lines = []
    for c in failing[:SHOWN_FAILING_CHECKS]:
        where = f"{c.scenario} {c.label}" if several else c.label
        line = f"{indent}✗ {where}: {_short(c.what, 60)}: {c.fails}/{c.passes + c.fails} failed"
        if c.failures:
            first = c.failures[0]
            line += f"; call {first.get('call_id') or '—'}: {_short(first.get('detail') or '—')}"
        lines.append(line)
    if len(failing) > SHOWN_FAILING_CHECKS:
        lines.append(f"{indent}… {len(failing) - SHOWN_FAILING_CHECKS} more in report.html")
    return lines


def end_summary(
    overall: Aggregate,
    records: Sequence[dict[str, Any]],
    results: Sequence[ThresholdResult] = (),
    summary: dict[str, Any] | None = None,
) -> list[str]:
    """The end-of-run lines, as k6 prints its end-of-test summary: any warning, the thresholds,
    then the checks (and the failing ones), the headline figures (count, then k6's avg min med
    p(90) p(95) max, in ms; per turn under turn.ttfa_ms when turns are named or several), the
    rates with their counts, the underflows over the agent audio heard, calls per second and the
    run's duration. Plain text: no colour codes."""
    lines = [f"uvbench: warning: {w}" for w in overall.warnings]
    if results:
        lines.append("THRESHOLDS")
        lines.extend(f"  {r.message}" for r in results)
    measured = [(n, s) for n in HEADLINE if (s := overall.metrics.get(n)) is not None and s.count]
    turn_rows: list[tuple[str, Any]] = []
    if _per_turn_wanted(overall):
        for label in _turn_labels(overall.turns):
            turn_rows.append((label, overall.turns[label].metrics.get("turn.ttfa_ms")))
    names = [n for n, _ in measured] + [f"  {{turn:{label}}}" for label, _ in turn_rows[:SHOWN_TURNS]]
    width = max([NAME_WIDTH, *(len(n) + 3 for n in names)])

    def dotted(name: str) -> str:
        return f"  {name}".ljust(width, ".") + ": "

    def trend(name: str, stats: Any) -> str:
        if stats is None or not stats.count:
            return dotted(name) + f"{0:>5}" + "".join(f"{'—':>8}" for _ in TREND_COLUMNS)
        values = (stats.mean, stats.min, stats.p50, stats.p90, stats.p95, stats.max)
        return dotted(name) + f"{stats.count:>5}" + "".join(f"{_fmt(v):>8}" for v in values)

    body: list[str] = []
    checks = overall.checks
    if checks.passes + checks.fails:
        body.append(dotted("checks") + f"{_pct(checks.rate or 0.0)} ✓ {checks.passes} ✗ {checks.fails}")
        body.extend(check_lines(checks))
    if measured:  # no header over nothing (a run whose calls were never created)
        body.append(" " * (width + 2) + "count" + "".join(f"{c:>8}" for c in TREND_COLUMNS) + "  (ms)")
    for name, stats in measured:
        body.append(trend(name, stats))
        if name == "turn.ttfa_ms":
            body.extend(trend(f"  {{turn:{label}}}", s) for label, s in turn_rows[:SHOWN_TURNS])
            if len(turn_rows) > SHOWN_TURNS:
                body.append(f"    … {len(turn_rows) - SHOWN_TURNS} more turns in report.html")
    for name, rate_name in RATE_LINES:
        rate = overall.rates.get(rate_name)
        if rate is None or not rate.denominator:
            continue
        share = _pct(rate.numerator / rate.denominator)
        n, of = int(rate.numerator), int(rate.denominator)
        if name == "turn.miss":  # a ✓ would count the misses, as k6's http_req_failed does: said in words
            body.append(dotted(name) + f"{share} {n} out of {of} turns")
        else:
            body.append(dotted(name) + f"{share} ✓ {n} ✗ {of - n}")
    underflow = _underflow_line(overall, records)
    if underflow:
        body.append(dotted("underflows") + underflow)
    if records:
        duration = run_duration_s(summary or {}, records)
        per_s = f"  {len(records) / duration:.2f}/s" if duration else ""
        invalid = f" ({overall.invalid} invalid: not in the figures)" if overall.invalid else ""
        body.append(dotted("calls") + f"{len(records)}{per_s}{invalid}")
        if duration:
            body.append(dotted("duration") + _duration(duration))
    if body:
        lines.append("TOTAL RESULTS (valid calls)")
        lines.extend(body)
    return lines


def _underflow_line(overall: Aggregate, records: Sequence[dict[str, Any]]) -> str | None:
    """The underflow headline, `N in M.M min of agent audio heard (X.XX/min)`; no per-minute
    figure from under `UNDERFLOW_MIN_AUDIO_S` of audio, nor from calls that did not measure it."""
    if not overall.valid:
        return None
    rate = overall.rates.get("audio.underflow_per_min")
    if rate is None:
        return None
    valid = [r.get("metrics") or {} for r in records if not str(r.get("outcome")).startswith("invalid:")]
    if not any(isinstance(m.get("call.agent_audio_ms"), (int, float)) for m in valid):
        # a run folder from before the audio heard was measured
        n = sum(c for m in valid if isinstance(c := m.get("call.underflow_count"), (int, float)))
        return f"{int(n)} (agent audio heard not measured: no per-minute figure)"
    n, minutes = int(rate.numerator), rate.denominator
    if rate.value is None:
        return (
            f"{n} in {minutes * 60:.1f} s of agent audio heard"
            f" (under {UNDERFLOW_MIN_AUDIO_S} s: no per-minute figure)"
        )
    return f"{n} in {minutes:.1f} min of agent audio heard ({rate.value:.2f}/min)"


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
    run: dict[str, Any] | None = None,
) -> None:
    """calls.csv, stats.csv and junit.xml; `dead`: the run's failed pacing processes; `run`:
    summary.json's `run` object (the calls' start times, the suite's time and timestamp)."""
    lines, cases = (tables.csv_lines, tables.cases) if tables is not None else (None, None)
    (folder / "calls.csv").write_text(calls_csv(records, lines=lines, run=run))
    (folder / "stats.csv").write_text(stats_csv(records))
    junit = junit_xml(records, threshold_results=results, cases=cases, generator_failures=dead, run=run)
    (folder / "junit.xml").write_text(junit)


def _side_work(
    folder: Path,
    records: list[dict[str, Any]],
    results: list[ThresholdResult],
    tables: Any,
    dead: Sequence[str],
    run: dict[str, Any] | None = None,
) -> Any:
    """In a big run, a forked process drawing the page's figures that need only the records, then
    writing the tables (`html.start_figures`); None when there is none (this process does it)."""
    if len(records) < SIDE_MIN_RECORDS:  # matplotlib is imported only when a page is drawn
        return None
    try:
        from uvbench.report.html import start_figures

        def tables_then() -> None:
            _write_tables(folder, records, results, tables, dead, run)

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
    run = summary.get("run") if isinstance(summary.get("run"), dict) else None
    side = _side_work(folder, records, finished.results, tables, dead, run)  # figures, tables, meanwhile
    overall = aggregate(records, by="scenario")
    finished.lines.extend(end_summary(overall, records, finished.results, summary))
    line = set_apart_line(overall) if records else None
    if line:
        finished.lines.append(line)
    summary["checks"] = overall.checks.to_json()  # top level, as k6's summary export; ahead of the load
    summary.update(extra or {})
    summary["aggregate"] = overall.to_json()
    levels = impairment_levels(records)  # a run with caller or network impairments: figures per level
    if levels is not None:
        summary["levels"] = levels.to_json()
    else:  # `uvbench report` of a folder whose calls no longer carry them
        summary.pop("levels", None)
    summary["thresholds"] = [r.to_json() for r in finished.results]
    summary_path.write_text(json.dumps(summary, indent=2))
    if side is None:
        _write_tables(folder, records, finished.results, tables, dead, run)
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
        _write_tables(folder, records, finished.results, tables, dead, run)
    return finished
