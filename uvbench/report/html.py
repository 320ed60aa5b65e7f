"""`report.html`: one self-contained page per run folder, readable at a glance after a load run.

Offline by construction: plain CSS in a <style> tag, plots inline as SVG (`uvbench.report.plots`),
no script, no font, no stylesheet and no image fetched from anywhere. Recordings are played by
`<audio>` elements that point at the call's recording (FLAC; WAV in earlier runs) by its path
relative to the run folder (the page lives in that folder), never embedded.

The page, top to bottom: any warning (invalid calls, many figures set apart, an interrupted run),
the run's name, time, target and load, the calls' outcomes (and the figures set apart), the
headline figures and a glossary; the thresholds, breaches first; the checks, failed first with
their failed calls; charts over the run's time (latency, calls in flight, outcomes, underflows and
barge-ins); the distributions; the figures per impairment level (a run whose scenarios set
`caller:` or `network:`); per-scenario and per-turn statistics; a few calls in detail
(timeline, transcript, recording); the table of calls, failed first. Everything is bounded so a
500-call run opens as fast as a 5-call one: `MAX_CALL_ROWS` rows in the call table,
`TIMELINE_CALLS` calls in detail, `MAX_PLAYERS` audio players, `MAX_SCENARIOS` scenarios in the
statistics, `MAX_CHECK_ROWS` checks, `MAX_TURN_LABELS` turns a scenario; what is left out is
counted.
Every piece of user text (scenario names, transcripts, error details) goes through `_esc`.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import multiprocessing
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from uvbench.metrics import GLOSSARY
from uvbench.metrics.aggregate import UNDERFLOW_MIN_AUDIO_S, Aggregate, aggregate, is_invalid
from uvbench.metrics.levels import impairment_levels
from uvbench.report.finish import HEADLINE
from uvbench.report.run_folder import generator_failures, load_timeline, write_text

MAX_CALL_ROWS = 200
TIMELINE_CALLS = 4
MAX_PLAYERS = 12
MAX_SCENARIOS = 40
MAX_TRANSCRIPT_LINES = 80
MAX_CHECK_ROWS = 200
MAX_TURN_LABELS = 30
TURN_FIGURES = (
    "turn.ttfa_ms",
    "turn.ttfb_ms",
    "turn.thinking_ms",
    "interrupt.silence_ms",
    "interrupt.clear_ms",
)
"""The rows of each turn's statistics (those it has)."""
MAX_TEXT = 600


SCENARIO_METRICS = (
    *HEADLINE,
    "turn.thinking_ms",
    "interrupt.response_ms",
    "call.join_ms",
    "call.max_buffered_ms",
    "call.underflow_ms",
    "call.duration_ms",
)
"""The rows of each scenario's statistics table (every metric is in the collapsed overall table)."""

REPORT_NAME = "report.html"
_STAMP = re.compile(r"^(\d{8}-\d{6})-(.+)$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# ------------------------------------------------------------------------------------------------
# Small formatting helpers


def _esc(value: Any, limit: int | None = None) -> str:
    """User text, made safe: control characters dropped, optionally shortened, HTML-escaped."""
    text = _CONTROL.sub("", "" if value is None else str(value))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=True)


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any, unit: str = "ms") -> str:
    if not _num(value):
        return "—"
    if unit == "count":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
    if unit == "%":
        return f"{value:.1f}"
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"


def _unit(metric: str) -> str:
    return GLOSSARY.get(metric, {}).get("unit", "ms")


def _pct(value: Any) -> str:
    return "—" if not _num(value) else f"{100 * value:.1f}%"


def _rel_link(folder: Path, rel: Any) -> str | None:
    """A path of the run folder usable in an href, or None if it is not a plain relative path to an
    existing file (an absolute path or one leaving the folder is never linked)."""
    if not isinstance(rel, str) or not rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
        return None
    if not (folder / rel).is_file():
        return None
    return quote(rel, safe="/")


def _stem(record: dict[str, Any]) -> str | None:
    timeline = (record.get("artifacts") or {}).get("timeline")
    if isinstance(timeline, str) and timeline.endswith(".timeline.json"):
        return PurePosixPath(timeline).name[: -len(".timeline.json")]
    return None


def _json_rel(record: dict[str, Any]) -> str | None:
    timeline = (record.get("artifacts") or {}).get("timeline")
    if isinstance(timeline, str) and timeline.endswith(".timeline.json"):
        return timeline[: -len(".timeline.json")] + ".json"
    return None


def _outcome(record: dict[str, Any]) -> str:
    outcome = record.get("outcome") or (record.get("metrics") or {}).get("call.outcome") or "unknown"
    return str(outcome)


def _worst(items: Any, metric: str) -> float | None:
    values = [
        (i.get("metrics") or {}).get(metric)
        for i in items or ()
        if isinstance(i, dict) and not i.get("missed")
    ]
    values = [v for v in values if _num(v)]
    return max(values) if values else None


def _rank(record: dict[str, Any]) -> int:
    """Failed calls first, then invalid ones, then completed ones."""
    outcome = _outcome(record)
    if outcome == "completed":
        return 2
    return 1 if outcome.startswith("invalid:") else 0


# ------------------------------------------------------------------------------------------------
# The run


@dataclass
class _Run:
    folder: Path
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    agg: dict[str, Any]
    name: str
    started: str | None
    warnings: list[str] = field(default_factory=list)
    overall: Aggregate | None = None
    """The records' aggregate when the caller computed it (its `metrics` cover the valid calls)."""


def _run_info(
    folder: Path, records: list[dict[str, Any]], summary: dict[str, Any], overall: Aggregate | None = None
) -> _Run:
    agg = summary.get("aggregate")
    if not isinstance(agg, dict) or "metrics" not in agg:
        agg = (overall or aggregate(records, by="scenario")).to_json()
    m = _STAMP.match(folder.name)
    name, started = folder.name, None
    if m:
        name = m.group(2)
        try:
            started = dt.datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            started = None
    return _Run(folder, records, summary, agg, name, started, overall=overall)


def _anchor(anchors: dict[str, Any], *keys: str) -> float | None:
    """The first of the named anchors that is set."""
    return next((anchors[k] for k in keys if _num(anchors.get(k))), None)


def _span_s(records: list[dict[str, Any]]) -> float | None:
    starts, ends = [], []
    for r in records:
        a = r.get("anchors") or {}
        start = _anchor(a, "create_sent_ns", "ws_connect_started_ns", "ws_open_ns")
        end = _anchor(a, "ws_closed_ns", "playback_end_ns")
        if _num(start):
            starts.append(start)
        if _num(end):
            ends.append(end)
    if not starts or not ends or max(ends) <= min(starts):
        return None
    return (max(ends) - min(starts)) / 1e9


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s"


def _load_dict_text(load: dict[str, Any]) -> str:
    """An expanded `load:` as one line; stages as k6 writes them on the command line (15s:50)."""

    def value(v: Any) -> str:
        if isinstance(v, list) and all(isinstance(x, dict) and "duration" in x for x in v):
            return ",".join(f"{x.get('duration')}:{x.get('target')}" for x in v)
        return str(v)

    return ", ".join(f"{_esc(k)} {_esc(value(v))}" for k, v in load.items() if v not in (None, "", (), []))


def _load_text(run: _Run) -> str:
    """The load profile: as the summary states it when it does, else what the records show."""
    stated = run.summary.get("load")
    parts: list[str] = []
    if isinstance(stated, dict) and stated:
        parts.append(_load_dict_text(stated))
    elif isinstance(stated, list):  # a suite: one expanded load per group
        parts.extend(_load_dict_text(load) for load in stated if isinstance(load, dict) and load)
    levels = [r.get("concurrency") for r in run.records if _num(r.get("concurrency"))]
    vus = {(r.get("tags") or {}).get("vu") for r in run.records} - {None}
    stages = {r.get("stage") for r in run.records} - {None}
    if levels:
        parts.append(f"peak concurrency {max(levels):.0f}")
    if len(vus) > 1:
        parts.append(f"{len(vus)} call slots")
    if stages:
        parts.append(f"{len(stages)} stage{'s' if len(stages) != 1 else ''}")
    dropped = run.summary.get("dropped_calls")
    if _num(dropped) and dropped:
        parts.append(f'<span class="bad-text">{dropped:.0f} calls dropped</span> (max in flight reached)')
    return " · ".join(parts) or "one call at a time"


# ------------------------------------------------------------------------------------------------
# Sections


def _banners(run: _Run) -> str:
    out = []
    for key in ("warning", "set_apart_warning"):  # invalid calls, then figures set apart
        warning = run.agg.get(key)
        if warning:
            out.append(f'<div class="banner warn">⚠ {_esc(warning)}</div>')
    if run.summary.get("interrupted"):
        by = "SIGTERM" if run.summary.get("stopped_by") == "SIGTERM" else "Ctrl-C"
        out.append(
            f'<div class="banner warn">⚠ The run was interrupted ({by}): the calls it stopped midway '
            "are marked interrupted, with what they measured.</div>"
        )
    for w in run.warnings:
        out.append(f'<div class="banner warn">⚠ {_esc(w)}</div>')
    return "\n".join(out)


def _verdict(run: _Run, thresholds: list[dict[str, Any]]) -> str:
    calls = run.agg.get("calls", len(run.records))
    completed = run.agg.get("completed", 0)
    failed = sum((run.agg.get("failed") or {}).values())
    invalid = run.agg.get("invalid", 0)
    breached = [t for t in thresholds if not t.get("passed")]
    dead = generator_failures(run.summary)
    if not calls:
        return '<div class="banner bad">No call finished in this run.</div>'
    problems = []
    if run.summary.get("gave_up"):  # the run stopped itself: its target refused every create
        problems.append(f"the run gave up: {_esc(str(run.summary['gave_up']))}")
    if dead:  # the load asked for was not delivered: whatever the calls did, the run is not a pass
        problems.append(f"{len(dead)} pacing process{'es' if len(dead) != 1 else ''} failed: {_esc(dead[0])}")
    if failed:
        problems.append(f"{failed} of {calls} calls failed")
    if invalid:
        problems.append(f"{invalid} invalid")
    if breached:
        problems.append(f"{len(breached)} threshold{'s' if len(breached) != 1 else ''} breached")
    if problems:
        return f'<div class="banner bad">✗ {"; ".join(problems)}</div>'
    gates = f", all {len(thresholds)} thresholds passed" if thresholds else ""
    return f'<div class="banner ok">✓ {completed} of {calls} calls completed{gates}</div>'


def _header(run: _Run) -> str:
    targets = sorted({str(r.get("target")) for r in run.records if r.get("target")})
    scenarios = sorted({str(r.get("scenario")) for r in run.records if r.get("scenario")})
    scen_text = ", ".join(_esc(s) for s in scenarios[:6])
    if len(scenarios) > 6:
        scen_text += f" and {len(scenarios) - 6} more"
    target_text = ", ".join(_esc(t) for t in targets[:6])
    if len(targets) > 6:
        target_text += f" and {len(targets) - 6} more"
    rows = [
        ("started", _esc(run.started or "—")),
        ("wall time", _duration_text(_span_s(run.records))),
        ("target", target_text or "—"),
        ("load", _load_text(run)),
        ("scenarios", scen_text or "—"),
        ("folder", f"<code>{_esc(run.folder.name)}</code>"),
    ]
    meta = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<h1>uvbench run: {_esc(run.name)}</h1>\n<table class="meta">{meta}</table>'


def _calls_tiles(run: _Run) -> str:
    agg = run.agg
    failed = agg.get("failed") or {}
    invalid = agg.get("invalid", 0)
    failed_n = sum(failed.values())
    reasons = ", ".join(f"{_esc(k)} {v}" for k, v in sorted(failed.items(), key=lambda kv: -kv[1]))
    inv_reasons = ", ".join(f"{_esc(k)} {v}" for k, v in (agg.get("invalid_reasons") or {}).items())
    rates = agg.get("rates") or {}
    bi = rates.get("interrupt.success_rate") or {}
    tiles = [
        (
            "calls",
            f"{agg.get('calls', 0)}",
            f'<span class="ok-text">{agg.get("completed", 0)} completed</span> · '
            f'<span class="{"bad-text" if failed_n else ""}">{failed_n} failed</span> · '
            f'<span class="{"warn-text" if invalid else ""}">{invalid} invalid</span>',
        ),
    ]
    if failed_n:
        tiles.append(("failed by reason", f"{failed_n}", reasons))
    if invalid:
        tiles.append(("invalid (generator overloaded)", f"{invalid}", inv_reasons or "—"))
    malformed = rates.get("call.malformed_rate") or {}
    if malformed.get("numerator"):
        tiles.append(
            (
                "server sent malformed messages",
                f"{malformed['numerator']:g}",
                f"calls with text frames that are not data messages (of {malformed.get('denominator', 0):g}; "
                "each call's timeline keeps them as msg.in_invalid)",
            )
        )
    set_apart = agg.get("set_apart_total") or 0
    if set_apart:
        why = ", ".join(f"{_esc(k)} {v}" for k, v in (agg.get("set_apart_reasons") or {}).items())
        by_metric = sorted(
            ((name, sum(reasons.values())) for name, reasons in (agg.get("set_apart") or {}).items()),
            key=lambda kv: (-kv[1], kv[0]),
        )
        figures = ", ".join(f"{_esc(name)} {n}" for name, n in by_metric[:4])
        tiles.append(
            (
                "figures set apart (generator late around them)",
                f"{set_apart}",
                f"of {agg.get('anchored', 0)} anchored · {why} · {figures}",
            )
        )
    tiles.append(_underflow_tile(rates))
    if bi.get("denominator"):
        tiles.append(
            (
                "barge-ins that stopped the agent",
                _pct(bi.get("value")),
                f"{_fmt(bi.get('numerator'), 'count')} of {_fmt(bi.get('denominator'), 'count')}",
            )
        )
    return _tiles(tiles)


def _underflow_tile(rates: dict[str, Any]) -> tuple[str, str, str]:
    """The underflow headline: every underflow per minute of all the agent audio heard (greeting and
    turns), with the minutes it rests on; no rate from too little audio (`audio.underflow_per_min`'s
    value is None then)."""
    uf = rates.get("audio.underflow_per_min") or {}
    any_uf = (rates.get("call.any_underflow_rate") or {}).get("value")
    count, minutes = uf.get("numerator"), uf.get("denominator")
    heard = (
        f"{_fmt(count, 'count')} underflows in {minutes:.1f} min of agent audio heard"
        if _num(minutes)
        else ""
    )
    if _num(uf.get("value")):
        big, small = f"{uf['value']:.1f}", heard
    elif _num(minutes) and minutes > 0:
        big, small = "—", f"{heard}: too little for a rate (under {UNDERFLOW_MIN_AUDIO_S:g} s)"
    else:
        big, small = "—", "no agent audio heard"
    return ("underflows per min of agent audio", big, f"{small} · {_pct(any_uf)} of calls had one")


def _tiles(tiles: list[tuple[str, str, str]]) -> str:
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><div class="name">{name}</div><div class="big">{big}</div>'
            f'<div class="small">{small}</div></div>'
            for name, big, small in tiles
        )
        + "</div>"
    )


def _headline(run: _Run) -> str:
    metrics = run.agg.get("metrics") or {}
    rows = []
    for name in HEADLINE:
        s = metrics.get(name) or {}
        count = s.get("count") or 0
        cells = "".join(f"<td>{_fmt(s.get(k))}</td>" for k in ("p50", "p95", "p99", "max"))
        rows.append(
            f'<tr><td class="l"><b>{name}</b><div class="hint">{_esc(_describe(name))}</div></td>'
            f"<td>{count}</td>{cells}</tr>"
        )
    table = (
        '<table class="figures"><thead><tr><th class="l">figure (ms)</th><th>count</th><th>p50</th>'
        "<th>p95</th><th>p99</th><th>max</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
    return _calls_tiles(run) + table + _glossary()


def _glossary() -> str:
    """Every figure's start and end point and unit (GLOSSARY), and where the full definitions are."""
    rows = "".join(
        f'<tr><td class="l"><code>{_esc(name)}</code></td><td class="l wrap">{_esc(g.get("from"))}</td>'
        f'<td class="l wrap">{_esc(g.get("to"))}</td><td class="l">{_esc(g.get("unit"))}</td></tr>'
        for name, g in GLOSSARY.items()
    )
    return (
        '<details id="glossary"><summary>Glossary: where each figure starts and ends</summary>'
        '<p class="hint">The full definitions (anchors, end points, units, validity rules, the listener '
        "model, what each outcome means) are in <code>docs/metrics.md</code> of the uvbench source; "
        "<code>uvbench schema</code> prints the metric names with the scenario schema.</p>"
        '<table class="glossary"><thead><tr><th class="l">figure</th><th class="l">from</th>'
        '<th class="l">to</th><th class="l">unit</th></tr></thead><tbody>'
        + rows
        + "</tbody></table></details>"
    )


def _describe(metric: str) -> str:
    g = GLOSSARY.get(metric)
    if not g:
        return ""
    short = {
        "turn.ttfa_ms": "end of user speech → first agent audio heard",
        "turn.ttfb_ms": "end of user speech → first agent audio frame received",
        "interrupt.clear_ms": "barge-in start → playback_clear_buffer received",
        "interrupt.silence_ms": "barge-in start → the interrupted agent is no longer heard",
        "call.first_audio_ms": "websocket open → greeting first heard",
    }
    return short.get(metric, f"{g['from']} → {g['to']}")


def _thresholds(thresholds: list[dict[str, Any]]) -> str:
    if not thresholds:
        return (
            '<p class="none">No thresholds were set for this run (e.g. '
            "<code>--threshold 'turn.ttfa_ms: p(95) &lt; 1200'</code>).</p>"
        )
    ordered = sorted(thresholds, key=lambda t: bool(t.get("passed")))
    rows = []
    for t in ordered:
        ok = bool(t.get("passed"))
        mark = '<span class="ok-text">✓ pass</span>' if ok else '<span class="bad-text">✗ FAIL</span>'
        abort = " (abortOnFail)" if t.get("abort_on_fail") else ""
        rows.append(
            f'<tr class="{"" if ok else "fail"}"><td class="l">{mark}</td>'
            f'<td class="l"><code>{_esc(t.get("metric"))}</code></td>'
            f'<td class="l"><code>{_esc(t.get("expression"))}</code>{abort}</td>'
            f'<td class="l">{_esc(t.get("observed_text"))}</td></tr>'
        )
    breached = sum(1 for t in thresholds if not t.get("passed"))
    head = (
        f'<p class="bad-text">{breached} of {len(thresholds)} thresholds breached</p>'
        if breached
        else f'<p class="ok-text">All {len(thresholds)} thresholds passed</p>'
    )
    return (
        head + '<table><thead><tr><th class="l">result</th><th class="l">metric</th>'
        '<th class="l">threshold</th><th class="l">observed</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


def _checks_section(run: _Run) -> str:
    """Every check (an expectation of a scenario's script, counted over the valid calls), failed ones
    first, each with the failed calls it kept; from the aggregate's `checks` (else summary.json's)."""
    checks = run.agg.get("checks")
    if not isinstance(checks, dict):
        checks = run.summary.get("checks")
    rows = [c for c in checks.get("checks") or () if isinstance(c, dict)] if isinstance(checks, dict) else []
    if not rows:
        return (
            '<p class="none">No expectation was checked in this run (a script step <code>expect:</code> '
            "adds checks).</p>"
        )
    passes, fails, rate = checks.get("passes", 0), checks.get("fails", 0), checks.get("rate")
    head = (
        f'<p class="{"bad-text" if fails else "ok-text"}">checks ✓ {_fmt(passes, "count")} '
        f"✗ {_fmt(fails, 'count')}{f' ({_pct(rate)} passed)' if _num(rate) else ''}</p>"
    )
    calls = {r.get("call_id"): r for r in run.records if r.get("call_id")}
    ordered = sorted(rows, key=lambda c: not c.get("fails"))  # stable: failed first, in script order
    body = []
    for c in ordered[:MAX_CHECK_ROWS]:
        failed = c.get("fails") or 0
        mark = '<span class="bad-text">✗</span>' if failed else '<span class="ok-text">✓</span>'
        items = []
        failures = [f for f in c.get("failures") or () if isinstance(f, dict)]
        for f in failures:
            call_id = str(f.get("call_id") or "—")
            link = _rel_link(run.folder, _json_rel(calls[call_id])) if call_id in calls else None
            name = f'<code title="{_esc(call_id)}">{_esc(call_id[:8])}</code>'
            if link:
                name = f'<a href="{link}">{name}</a>'
            items.append(f"<li>{name} {_esc(f.get('detail'), 300)}</li>")
        if _num(failed) and failed > len(failures):
            items.append(
                f'<li class="hint">{failed - len(failures):.0f} more failed calls: '
                "calls.csv, results.jsonl</li>"
            )
        detail = f'<ul class="failures">{"".join(items)}</ul>' if items else ""
        label = c.get("label") or c.get("name") or f"step{c.get('step')}"
        body.append(
            f'<tr class="{"fail" if failed else ""}"><td class="l">{mark}</td>'
            f'<td class="l scenario">{_esc(c.get("scenario"))}</td>'
            f'<td class="l"><code>{_esc(label)}</code></td>'
            f'<td class="l wrap">{_esc(c.get("what"), MAX_TEXT)}{detail}</td>'
            f"<td>{_fmt(c.get('passes'), 'count')}</td><td>{_fmt(failed, 'count')}</td></tr>"
        )
    left = len(rows) - len(body)
    note = (
        f'<p class="none">{left} more checks, in summary.json (failed checks come first).</p>'
        if left > 0
        else ""
    )
    return (
        head + '<div class="scroll"><table class="checks"><thead><tr><th class="l"></th>'
        '<th class="l">scenario</th>'
        '<th class="l">step</th><th class="l">expected</th><th>✓</th><th>✗</th></tr></thead><tbody>'
        + "".join(body)
        + "</tbody></table></div>"
        + note
    )


def _figure(svg: str | None, none_text: str, caption: str = "") -> str:
    if svg is None:
        return f'<figure class="empty"><p class="none">{none_text}</p></figure>'
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure>{svg}{cap}</figure>"


def _figure_jobs(
    folder: Path,
    records: list[dict[str, Any]],
    shown: list[_Shown],
    overall: Aggregate | None,
    history: list[dict] | None,
    plots_mod: Any,
    thresholds: list[dict[str, Any]] | None = None,
    levels: dict[str, Any] | None = None,
) -> dict[str, Callable[[], Any]]:
    """Every figure of the page, each to draw, by name: the run's plots, the charts over the run's
    time (`run:*`, drawing `thresholds` where they apply), each shown call's timeline
    (`timeline:<its position in records>`), the figures per impairment level (`level:*`, of
    summary.json's `levels` when it has a dimension that varies), and the history. The names in
    `RECORDS_ONLY` and the timelines need nothing but the records (`start_figures` draws them
    ahead)."""
    valid = [r for r in records if not is_invalid(r)]
    computed: list[Aggregate] = [] if overall is None else [overall]
    placed: list[Any] = []

    def series() -> Any:
        # One pass over the records for all the charts over the run drawn in this process.
        if not placed:
            placed.append(plots_mod.run_series(records))
        return placed[0]

    def aggregate_of_valid() -> Aggregate:
        # An aggregate's `metrics` are the valid calls' whatever records it was given: the run's does.
        if not computed:
            computed.append(aggregate(valid))
        return computed[0]

    jobs: dict[str, Callable[[], Any]] = {
        "histogram": lambda: plots_mod.latency_histogram(valid, overall=aggregate_of_valid()),
        "cdf": lambda: plots_mod.latency_cdf(valid, overall=aggregate_of_valid()),
        "by_concurrency": lambda: plots_mod.latency_by_concurrency(valid),
        "by_buffer": lambda: plots_mod.underflow_by_buffer(valid),
        "barge_ins": lambda: plots_mod.barge_in_distribution(valid, overall=aggregate_of_valid()),
        "run:latency": lambda: plots_mod.run_latency(series(), thresholds),
        "run:load": lambda: plots_mod.run_load(series()),
        "run:outcomes": lambda: plots_mod.run_outcomes(series()),
        "run:audio": lambda: plots_mod.run_audio(series()),
    }
    position = {id(r): k for k, r in enumerate(records)}
    for call in shown:
        jobs[f"timeline:{position[id(call.record)]}"] = _timeline_job(folder, call.record, plots_mod)
    if plots_mod.level_layout(levels) is not None:
        for name in plots_mod.LEVEL_FIGURES:
            jobs[f"level:{name}"] = lambda name=name: plots_mod.level_plot(levels, name)
    if history is not None:
        jobs["history"] = lambda: plots_mod.history_plot(history)
    return jobs


RECORDS_ONLY = ("by_concurrency", "by_buffer", "run:load", "run:outcomes", "run:audio")
"""Plots drawn from the records alone (no aggregate): `start_figures` draws them ahead."""
PARALLEL_MIN_RECORDS = 1000
"""From this many calls on, `start_figures` draws a forked process's share of the page's figures
while the caller computes the aggregate (when this process can fork: Linux, no other thread): each
figure takes a few tenths of a second whatever the run's size."""


class Figures:
    """Figures drawn ahead by a forked process (`start_figures`), for `render_html` to take."""

    def __init__(self, helper: Any, receive: Any) -> None:
        self._helper = helper
        self._receive = receive

    def take(self) -> dict[str, Any]:
        """The figures by name once drawn; {} when the helper failed (the page draws them)."""
        if self._receive.closed:
            return {}
        try:
            drawn = self._receive.recv()
        except (EOFError, OSError):
            drawn = {}
        finally:
            self._receive.close()
        return drawn if isinstance(drawn, dict) else {}

    def finish(self) -> bool:
        """Wait for the helper (the work it does after the figures, `start_figures`'s `then`): whether
        all of it was done. A helper whose figures were not taken (the page failed) is stopped."""
        if not self._receive.closed:
            self._receive.close()
            self._helper.terminate()
            self._helper.join()
            return False
        self._helper.join()
        return self._helper.exitcode == 0


def start_figures(
    folder: Path, records: list[dict[str, Any]], then: Callable[[], Any] | None = None
) -> Figures | None:
    """For a big run (`PARALLEL_MIN_RECORDS`), a forked process drawing the figures that need only
    the records (`RECORDS_ONLY`, the shown calls' timelines) while this one goes on, then doing
    `then` (`Figures.finish` says whether it did); None when there is no such process (the caller
    does it all)."""
    if len(records) < PARALLEL_MIN_RECORDS or threading.active_count() != 1:
        return None
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    from uvbench.report import plots as plots_mod

    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def helper_main() -> None:
        # The parent's SIGTERM handler (a run's clean stop) is not this helper's: `Figures.finish`
        # stops an unneeded helper with SIGTERM, and it should just end.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        plots_mod.number_ids_from(1 << 40)  # apart from the ids of the figures the page draws
        try:  # the calls to show are picked here as the page picks them (the same records)
            jobs = _figure_jobs(Path(folder), records, _pick_calls(records), None, None, plots_mod)
            names = [n for n in jobs if n in RECORDS_ONLY or n.startswith("timeline:")]
            send.send({n: jobs[n]() for n in names})
        except BaseException:
            pass  # the page draws them itself
        send.close()
        try:
            if then is not None:
                then()
        except BaseException:
            raise SystemExit(1) from None  # quietly: the caller does it itself

    helper = ctx.Process(target=helper_main, daemon=True)
    sys.stdout.flush()  # or the helper could write out a copy of what is buffered
    sys.stderr.flush()
    try:
        helper.start()
    except OSError:
        return None
    send.close()
    return Figures(helper, receive)


def _plots(svgs: list[str | None]) -> str:
    histogram, cdf, by_concurrency, by_buffer, barge_ins = svgs
    parts = [
        _figure(histogram, "No turn latency in this run: no turn was answered."),
        _figure(cdf, "No turn latency in this run, so no CDF."),
        _figure(
            by_concurrency,
            "No turn latency with a concurrency tag in this run.",
            "Concurrency is the number of calls in flight when a call started.",
        ),
        _figure(
            by_buffer,
            "Too little agent audio was heard for an underflow rate.",
            "Underflows per minute of agent audio heard (greeting and turns), per clientBufferSizeMs.",
        ),
        _figure(
            barge_ins,
            "No barge-ins in this run.",
            "Per barge-in: interrupt.silence_ms (the interrupted agent is no longer heard) and "
            "interrupt.clear_ms (playback_clear_buffer received), from the start of the user's speech.",
        ),
    ]
    return '<div class="plots">' + "".join(parts) + "</div>"


def _levels_of(records: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any] | None:
    """The figures per impairment level: summary.json's `levels` (the page shows the summary's
    numbers), else computed from the records; None for a run without impairments."""
    stated = summary.get("levels")
    if isinstance(stated, dict):
        return stated
    levels = impairment_levels(records)
    return levels.to_json() if levels is not None else None


LEVEL_CAPTIONS = {
    "turn.ttfa_ms": "p50 (solid) and p95 (dashed) of turn.ttfa_ms, answered turns.",
    "turn.miss_rate": "turn.miss_rate: turns with no reply heard, of all turns.",
    "call.false_barge_in_count": "Mean of call.false_barge_in_count: clears no scripted speech or message "
    "explains.",
    "talk_over": "Mean of turn.talk_over_ms (solid) and interrupt.talk_over_ms (dashed, runs with "
    "barge-ins): agent audio heard while the user spoke.",
    "underflows": "audio.underflow_per_min: none under "
    f"{UNDERFLOW_MIN_AUDIO_S:g} s of agent audio at a level.",
}
"""Each figure per impairment level's caption."""
LEVEL_NONE = {
    "turn.ttfa_ms": "No answered turn at any level.",
    "turn.miss_rate": "No turn at any level.",
    "call.false_barge_in_count": "No call measured call.false_barge_in_count.",
    "talk_over": "No talk-over measured at any level.",
    "underflows": "Too little agent audio at every level for an underflow rate.",
}


def _levels_section(levels: dict[str, Any], drawn: dict[str, Any], plots_mod: Any) -> str:
    """The figures per level of the caller's audio (`caller:`) and the network (`network:`): a plot
    per figure against the levels, and the table of the same numbers (summary.json's `levels`)."""
    layout = plots_mod.level_layout(levels)
    dims = levels.get("dimensions") or {}
    notes = []
    if layout.descending:
        notes.append("SNR runs from high to low: clean on the left, noisier to the right.")
    elif layout.axis is None:
        notes.append(f"The {_esc(layout.dimension)} levels are in the order the run first met them.")
    if layout.lines[0][0] is not None:
        other = next(n for n in dims if n != layout.dimension)
        notes.append(f"A line per {_esc(other)} level.")
    for name, label in (levels.get("constant") or {}).items():
        notes.append(f"Every call had {_esc(name)} <code>{_esc(label)}</code>.")
    for name, d in dims.items():
        if isinstance(d, dict) and d.get("left_out"):
            notes.append(
                f"{_fmt(d['left_out'], 'count')} more {_esc(name)} levels with fewer calls are left out "
                f"(at most {_fmt(levels.get('max_levels'), 'count')}); their calls are in the other figures."
            )
    parts = [
        _figure(drawn.get(f"level:{name}"), LEVEL_NONE[name], LEVEL_CAPTIONS[name])
        for name in plots_mod.LEVEL_FIGURES
    ]
    tables = [
        f'<h3>{_esc(name)} <span class="hint">({_esc(d.get("axis") or "categorical")})</span></h3>'
        + _levels_table(
            [(lv, [lv.get("label")]) for lv in d.get("levels") or () if isinstance(lv, dict)], [name]
        )
        for name, d in dims.items()
        if isinstance(d, dict)
    ]
    cross = [c for c in levels.get("cross") or () if isinstance(c, dict)]
    if cross:
        tables.append(
            f"<details><summary>Every caller level crossed with every network level ({len(cross)})</summary>"
            + _levels_table([(c, [c.get("caller"), c.get("network")]) for c in cross], ["caller", "network"])
            + "</details>"
        )
    return (
        f'<p class="hint">{" ".join(notes)}</p>'
        + '<div class="plots">'
        + "".join(parts)
        + "</div>"
        + "".join(tables)
    )


def _levels_table(rows: list[tuple[dict[str, Any], list[Any]]], heads: list[str]) -> str:
    """A row of figures per level (or pair of levels), named by `heads`' cells."""
    barge_ins = any("interrupt.talk_over_ms" in figures for figures, _ in rows)

    def value(figures: dict[str, Any], key: str, stat: str) -> Any:
        entry = figures.get(key)
        return entry.get(stat) if isinstance(entry, dict) else None

    body = []
    for figures, names in rows:
        cells = [f'<td class="l"><code>{_esc(n)}</code></td>' for n in names]
        invalid = figures.get("invalid") or 0
        cells += [
            f"<td>{_fmt(figures.get('calls'), 'count')}"
            + (f' <span class="hint">({_fmt(invalid, "count")} invalid)</span>' if invalid else "")
            + "</td>",
            f"<td>{_fmt(value(figures, 'turn.ttfa_ms', 'p50'))}</td>",
            f"<td>{_fmt(value(figures, 'turn.ttfa_ms', 'p95'))}</td>",
            f"<td>{_fmt(value(figures, 'turn.ttfa_ms', 'count'), 'count')}</td>",
            f"<td>{_pct(value(figures, 'turn.miss_rate', 'value'))}</td>",
            f"<td>{_fmt2(value(figures, 'call.false_barge_in_count', 'mean'))}</td>",
            f"<td>{_pct(value(figures, 'call.false_barge_in_rate', 'value'))}</td>",
            f"<td>{_fmt(value(figures, 'turn.talk_over_ms', 'mean'))}</td>",
        ]
        if barge_ins:
            cells.append(f"<td>{_fmt(value(figures, 'interrupt.talk_over_ms', 'mean'))}</td>")
        cells.append(f"<td>{_fmt2(value(figures, 'audio.underflow_per_min', 'value'))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f'<th class="l">{_esc(h)}</th>' for h in heads)
    head += (
        "<th>calls</th><th>TTFA p50<br>ms</th><th>TTFA p95<br>ms</th><th>turns<br>answered</th>"
        "<th>turns<br>missed</th><th>false barge-ins<br>per call</th><th>calls with a<br>false barge-in</th>"
        "<th>talk-over<br>mean ms</th>"
        + ("<th>barge-in talk-over<br>mean ms</th>" if barge_ins else "")
        + "<th>underflows<br>per min</th>"
    )
    return (
        f'<div class="scroll"><table class="levels"><thead><tr>{head}</tr></thead><tbody>'
        + "".join(body)
        + "</tbody></table></div>"
    )


def _fmt2(value: Any) -> str:
    """A small figure (a mean count, a rate per minute) to two decimals."""
    return f"{value:.2f}" if _num(value) else "—"


RUN_CHARTS = ("run:latency", "run:load", "run:outcomes", "run:audio")
"""The charts over the run's time, top to bottom."""


def _over_the_run(records: list[dict[str, Any]], drawn: dict[str, Any], plots_mod: Any) -> str:
    """The charts over the run's time, and how many calls they leave out (no start time)."""
    unplaced = sum(1 for r in records if plots_mod.start_offset(r) is None)
    if records and unplaced == len(records):
        return (
            '<p class="none">No call of this run has a start time in the run (<code>start_offset_s</code>: '
            "a run recorded before uvbench kept it, rebuilt), so there is nothing to draw over the "
            "run's time.</p>"
        )
    if not records:
        return '<p class="none">No calls, so nothing to draw over the run\'s time.</p>'
    note = (
        f'<p class="none">{unplaced} of {len(records)} calls have no start time in the run '
        "(<code>start_offset_s</code>: recorded before uvbench kept it) and are left out of these "
        "charts.</p>"
        if unplaced
        else ""
    )
    latency, load, outcomes, audio = (drawn[n] for n in RUN_CHARTS)
    parts = [
        _figure(
            latency,
            "No answered turn of a valid call to place in time: no turn latency over the run.",
            "Turns are placed at the end of the user's speech (t_se); p50 and p95 of the turns in each "
            "bucket, figures set apart left out; thresholds on turn.ttfa_ms levels drawn as lines.",
        ),
        _figure(
            load,
            "No call to place in time.",
            "A call is in flight from its start to the websocket closing; started per second is the "
            "bucket's starts over its width.",
        ),
        _figure(
            outcomes, "No call to place in time.", "Every call, invalid ones included, at the time it ended."
        ),
        _figure(
            audio,
            "No call to place in time.",
            "Underflows at the time the buffer ran dry, barge-ins at the time the user started speaking "
            "over the agent; valid calls.",
        ),
    ]
    return note + '<div class="run-charts">' + "".join(parts) + "</div>"


def _scenario_stats(run: _Run) -> str:
    groups = run.agg.get("groups") or {}
    if not groups:
        groups = {"all": run.agg}
    keys = list(groups)[:MAX_SCENARIOS]
    left = len(groups) - len(keys)
    head = (
        '<div class="scroll"><table class="stats"><thead><tr>'
        '<th class="l">scenario</th><th class="l">metric</th>'
        "<th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th>"
        "</tr></thead><tbody>"
    )
    rows = []
    for key in keys:
        g = groups[key]
        metrics = g.get("metrics") or {}
        names = [n for n in SCENARIO_METRICS if (metrics.get(n) or {}).get("count")]
        label = (
            f'<td class="l scen" rowspan="{max(1, len(names))}"><b>{_esc(key)}</b><div class="hint">'
            f"{g.get('calls', 0)} calls · {g.get('completed', 0)} completed"
            f"{' · ' + str(sum((g.get('failed') or {}).values())) + ' failed' if g.get('failed') else ''}"
            f"{' · ' + str(g.get('invalid')) + ' invalid' if g.get('invalid') else ''}</div></td>"
        )
        if not names:
            rows.append(f'<tr>{label}<td class="l none" colspan="8">no figures</td></tr>')
            continue
        for i, n in enumerate(names):
            rows.append(f"<tr>{label if i == 0 else ''}{_stat_cells(n, metrics[n])}</tr>")
    note = f'<p class="none">{left} more scenarios left out (see stats.csv).</p>' if left else ""
    every = run.agg.get("metrics") or {}
    all_rows = "".join(f"<tr>{_stat_cells(n, s)}</tr>" for n, s in every.items() if s.get("count"))
    details = (
        "<details><summary>Every metric, all valid calls</summary>"
        '<table class="stats"><thead><tr><th class="l">metric</th><th>count</th><th>mean</th><th>p50</th>'
        "<th>p90</th><th>p95</th><th>p99</th><th>max</th></tr></thead><tbody>"
        + all_rows
        + "</tbody></table></details>"
    )
    return head + "".join(rows) + "</tbody></table></div>" + note + details


def _turns_section(run: _Run) -> str:
    """Figures per turn label (the step's `name:`, else `step<index>`; `Aggregate.turns`), per
    scenario when the run has several (the same label in two scripts is two different turns)."""
    groups = run.agg.get("groups") or {}
    if len(groups) > 1:
        sources = [(str(k), g) for k, g in list(groups.items())[:MAX_SCENARIOS] if isinstance(g, dict)]
    else:
        sources = [("", run.agg)]
    rows = []
    for scenario, g in sources:
        turns = g.get("turns") if isinstance(g.get("turns"), dict) else {}
        labels = list(turns)[:MAX_TURN_LABELS]
        lines = []
        for label in labels:
            t = turns[label] if isinstance(turns[label], dict) else {}
            metrics = t.get("metrics") or {}
            names = [n for n in TURN_FIGURES if (metrics.get(n) or {}).get("count")]
            missed = t.get("missed") or 0
            barge_in = bool(names) and all(n.startswith("interrupt.") for n in names)
            head = (
                f'<td class="l scen" rowspan="{max(1, len(names))}"><code>{_esc(label)}</code>'
                f'<div class="hint">{_fmt(t.get("turns"), "count")} {"barge-ins" if barge_in else "turns"}'
                f"{f' · {missed} missed' if missed else ''}</div></td>"
            )
            if not names:
                lines.append([head, '<td class="l none" colspan="8">no figures</td>'])
                continue
            lines += [[head if i == 0 else "", _stat_cells(n, metrics[n])] for i, n in enumerate(names)]
        if len(turns) > len(labels):
            lines.append(
                [f'<td class="l none" colspan="9">{len(turns) - len(labels)} more turns: summary.json</td>']
            )
        if scenario and lines:
            lines[0].insert(0, f'<td class="l scen" rowspan="{len(lines)}"><b>{_esc(scenario)}</b></td>')
        rows += ["<tr>" + "".join(cells) + "</tr>" for cells in lines]
    if not rows:
        return '<p class="none">No turns in this run.</p>'
    first = '<th class="l">scenario</th>' if len(sources) > 1 else ""
    return (
        f'<div class="scroll"><table class="stats turns"><thead><tr>{first}<th class="l">turn</th>'
        '<th class="l">metric</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th>'
        "<th>max</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


def _stat_cells(name: str, s: dict[str, Any]) -> str:
    unit = _unit(name)
    shown_unit = {"ms": "ms", "count": "", "%": "%"}.get(unit, unit)
    if name.endswith(("_ms", "_pct")):  # the name says its unit already ("turn.ttfa_ms ms" no more)
        shown_unit = ""
    cells = "".join(f"<td>{_fmt(s.get(k), unit)}</td>" for k in ("mean", "p50", "p90", "p95", "p99", "max"))
    return (
        f'<td class="l"><code>{_esc(name)}</code> <span class="hint">{_esc(shown_unit)}</span></td>'
        f"<td>{s.get('count', 0)}</td>{cells}"
    )


# ------------------------------------------------------------------------------------------------
# Calls in detail


@dataclass
class _Shown:
    record: dict[str, Any]
    reasons: list[str]


def _pick_calls(records: list[dict[str, Any]], n: int = TIMELINE_CALLS) -> list[_Shown]:
    """Up to `n` calls worth a look: the first, the slowest turn, a failed one, the most underflow
    (or the slowest barge-in); one call chosen for several reasons is shown once."""
    if not records:
        return []
    shown: dict[int, _Shown] = {}

    def add(record: dict[str, Any] | None, reason: str) -> None:
        if record is None or len(shown) >= n and id(record) not in shown:
            return
        shown.setdefault(id(record), _Shown(record, [])).reasons.append(reason)

    def started(r: dict[str, Any]) -> float:
        a = r.get("anchors") or {}
        t = _anchor(a, "create_sent_ns", "ws_open_ns")
        return t if _num(t) else math.inf

    ordered = sorted(range(len(records)), key=lambda i: (started(records[i]), i))
    add(records[ordered[0]], "first call")
    valid = [r for r in records if not is_invalid(r)]
    slowest = max(valid, key=lambda r: _worst(r.get("turns"), "turn.ttfa_ms") or -1, default=None)
    if slowest is not None and _worst(slowest.get("turns"), "turn.ttfa_ms") is not None:
        add(slowest, "slowest turn (TTFA)")
    failed = [r for r in records if _outcome(r) != "completed"]
    failed.sort(key=lambda r: (_rank(r), (r.get("artifacts") or {}).get("timeline") is None))
    if failed:
        add(failed[0], "failed" if _rank(failed[0]) == 0 else "invalid")
    underflow = max(valid, key=lambda r: (r.get("metrics") or {}).get("call.underflow_ms") or 0, default=None)
    if underflow is not None and ((underflow.get("metrics") or {}).get("call.underflow_ms") or 0) > 0:
        add(underflow, "most underflow")
    else:
        slow_bi = max(
            valid, key=lambda r: _worst(r.get("barge_ins"), "interrupt.silence_ms") or -1, default=None
        )
        if slow_bi is not None and _worst(slow_bi.get("barge_ins"), "interrupt.silence_ms") is not None:
            add(slow_bi, "slowest barge-in")
    # Room left: calls of scenarios (matrix variants) not shown yet, to compare them.
    seen = {s.record.get("scenario") for s in shown.values()}
    for i in ordered:
        if len(shown) >= n:
            break
        scenario = records[i].get("scenario")
        if scenario not in seen and not is_invalid(records[i]):
            seen.add(scenario)
            add(records[i], "another scenario")
    return list(shown.values())


def _playback_of(folder: Path, record: dict[str, Any]) -> tuple[Any, str | None]:
    """The listener's playback of a call from its saved timeline, or None and why not."""
    from uvbench.metrics.call import playback

    rel = (record.get("artifacts") or {}).get("timeline")
    if not isinstance(rel, str):
        return None, "no timeline saved for this call"
    path = folder / rel
    try:
        return playback(load_timeline(path)), None
    except FileNotFoundError:
        return None, f"its timeline {PurePosixPath(rel).name} is missing"
    except Exception as exc:  # a corrupt timeline must not stop the report
        return None, f"its timeline is unreadable ({type(exc).__name__})"


def _audio(folder: Path, record: dict[str, Any]) -> str:
    artifacts = record.get("artifacts") or {}
    out = []
    rec = _rel_link(folder, artifacts.get("recording"))
    if rec:
        out.append(
            f'<div class="player"><span class="hint">recording (left: user as sent, right: agent as heard)'
            f'</span><br><audio controls preload="none" src="{rec}"></audio></div>'
        )
    server = _rel_link(folder, artifacts.get("server_recording"))
    if server:
        out.append(f'<div class="player"><a href="{server}">server recording (WAV)</a></div>')
    return "".join(out)


def _transcript(record: dict[str, Any]) -> str:
    entries = [e for e in record.get("transcripts") or () if isinstance(e, dict)]
    if not entries:
        return '<p class="none">No transcript.</p>'
    origin = (record.get("anchors") or {}).get("ws_open_ns")
    lines = []
    for e in entries[:MAX_TRANSCRIPT_LINES]:
        role = str(e.get("role") or "?")
        at = e.get("first_ns")
        when = f"{(at - origin) / 1e9:6.2f} s" if _num(at) and _num(origin) else ""
        medium = " (text)" if e.get("medium") == "text" else ""
        partial = "" if e.get("final", True) else ' <span class="hint">(not final)</span>'
        lines.append(
            f'<li class="{_esc(role)}"><span class="when">{when}</span> <b>{_esc(role)}{medium}</b> '
            f"{_esc(e.get('text'), MAX_TEXT)}{partial}</li>"
        )
    more = (
        f'<li class="hint">… {len(entries) - MAX_TRANSCRIPT_LINES} more lines in the call JSON</li>'
        if len(entries) > MAX_TRANSCRIPT_LINES
        else ""
    )
    return f'<ol class="transcript">{"".join(lines)}{more}</ol>'


def _call_title(record: dict[str, Any]) -> str:
    return f"{record.get('scenario')} · call {str(record.get('call_id') or '—')[:8]} · {_outcome(record)}"


def _timeline_job(folder: Path, record: dict[str, Any], plots_mod: Any) -> Callable[[], Any]:
    """A shown call's timeline figure to draw: (its SVG or None when the call never connected, why
    the figure comes from the record alone or None)."""

    def draw() -> tuple[str | None, str | None]:
        pb, why = _playback_of(folder, record)
        view = plots_mod.call_view(record, pb, plots_mod._text(_call_title(record)))
        return (plots_mod.call_timeline(view) if view is not None else None), why

    return draw


def _shown_calls(run: _Run, shown: list[_Shown], figures: list[tuple[str | None, str | None]]) -> str:
    if not shown:
        return '<p class="none">No calls.</p>'
    out = []
    for s, (svg, why) in zip(shown, figures, strict=True):
        r = s.record
        figure = (
            _figure(svg, "")
            if svg is not None
            else '<p class="none">Nothing to draw: the call never connected.</p>'
        )
        note = f'<p class="none">Drawn from the record alone: {_esc(why)}.</p>' if why and svg else ""
        detail = r.get("outcome_detail")
        outcome = _outcome(r)
        cls = "ok-text" if outcome == "completed" else "bad-text"
        link = _rel_link(run.folder, _json_rel(r))
        link_html = f' · <a href="{link}">call JSON</a>' if link else ""
        out.append(
            f'<article class="call"><h3>{_esc(r.get("scenario"))} <span class="hint">'
            f"({_esc(', '.join(s.reasons))})</span></h3>"
            f"<p>call <code>{_esc(r.get('call_id') or '—')}</code> · "
            f'<span class="{cls}">{_esc(outcome)}</span>'
            f"{': ' + _esc(detail, MAX_TEXT) if detail else ''}{link_html}</p>"
            f"{figure}{note}"
            f'<div class="cols"><div><h4>Transcript</h4>{_transcript(r)}</div>'
            f"<div>{_audio(run.folder, r)}</div></div></article>"
        )
    return "".join(out)


def _failed_players(run: _Run, shown: list[_Shown]) -> str:
    """Recordings of failed calls not already shown above, up to the player budget."""
    budget = MAX_PLAYERS - sum(
        1 for s in shown if _rel_link(run.folder, (s.record.get("artifacts") or {}).get("recording"))
    )
    shown_ids = {id(s.record) for s in shown}
    failed = [r for r in run.records if _outcome(r) != "completed" and id(r) not in shown_ids]
    items = []
    for r in failed:
        if budget <= 0:
            break
        player = _audio(run.folder, r)
        if not player:
            continue
        budget -= 1
        items.append(
            f"<li><b>{_esc(r.get('scenario'))}</b> <code>{_esc(str(r.get('call_id') or '—')[:8])}</code> "
            f'<span class="bad-text">{_esc(_outcome(r))}</span>{player}</li>'
        )
    if not items:
        return ""
    left = len(failed) - len(items)
    more = f'<p class="none">{left} more failed calls: recordings in calls/.</p>' if left > 0 else ""
    return f'<h3>Recordings of other failed calls</h3><ul class="players">{"".join(items)}</ul>{more}'


# ------------------------------------------------------------------------------------------------
# The call table


def _detail_html(detail: Any) -> str:
    return f'<br><span class="hint">{_esc(detail, 300)}</span>' if detail else ""


def _call_table(run: _Run) -> str:
    indexed = sorted(enumerate(run.records), key=lambda ir: (_rank(ir[1]), ir[0]))
    rows = []
    for n, (i, r) in enumerate(indexed):
        if n >= MAX_CALL_ROWS:
            break
        m = r.get("metrics") or {}
        outcome = _outcome(r)
        detail = r.get("outcome_detail")
        cls = "" if outcome == "completed" else ("fail" if not outcome.startswith("invalid:") else "invalid")
        link = _rel_link(run.folder, _json_rel(r))
        stem = _stem(r)
        number = stem.split("-", 1)[0] if stem and stem.split("-", 1)[0].isdigit() else f"#{i + 1}"
        title = f' title="{_esc(stem)}"' if stem else ""
        name = (
            f'<a href="{link}"{title}>{_esc(number)}</a>' if link else f"<span{title}>{_esc(number)}</span>"
        )
        duration = m.get("call.duration_ms")
        cells = [
            f'<td class="l">{name}</td>',
            f'<td class="l scenario">{_esc(r.get("scenario"))}</td>',
            f'<td class="l"><code title="{_esc(r.get("call_id") or "")}">'
            f"{_esc(str(r.get('call_id') or '—')[:8])}</code></td>",
            f'<td class="l wrap"><span class="{"ok-text" if outcome == "completed" else "bad-text"}">'
            f"{_esc(outcome)}</span>{_detail_html(detail)}</td>",
            f"<td>{_fmt(r.get('concurrency'), 'count')}</td>",
            f"<td>{_fmt(m.get('call.first_audio_ms'))}</td>",
            f"<td>{_fmt(_worst(r.get('turns'), 'turn.ttfa_ms'))}</td>",
            f"<td>{_fmt(_worst(r.get('turns'), 'turn.ttfb_ms'))}</td>",
            f"<td>{_fmt(_worst(r.get('barge_ins'), 'interrupt.silence_ms'))}</td>",
            f"<td>{_fmt(m.get('call.underflow_count'), 'count')}</td>",
            f"<td>{_fmt(m.get('call.max_buffered_ms'))}</td>",
            f"<td>{'—' if not _num(duration) else f'{duration / 1000:.1f}'}</td>",
        ]
        rows.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    left = len(run.records) - len(rows)
    note = (
        f'<p class="none">{left} more calls left out of this table (failed calls come first); '
        f"every call is in calls.csv and results.jsonl.</p>"
        if left > 0
        else ""
    )
    head = (
        '<div class="scroll"><table class="calls"><thead><tr>'
        '<th class="l">call</th><th class="l">scenario</th>'
        '<th class="l">call id</th><th class="l">outcome</th><th>conc.</th><th>greeting<br>ms</th>'
        "<th>worst TTFA<br>ms</th><th>worst TTFB<br>ms</th><th>worst silence<br>ms</th>"
        "<th>under-<br>flows</th><th>max buffered<br>ms</th><th>duration<br>s</th></tr></thead><tbody>"
    )
    return head + "".join(rows) + "</tbody></table></div>" + note


# ------------------------------------------------------------------------------------------------
# The page


CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:#1d1f23;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:18px 22px 48px}
h1{font-size:22px;margin:4px 0 8px}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:15px;margin:14px 0 6px}
h4{font-size:13px;margin:8px 0 4px;color:#444}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:14px 18px;margin:14px 0}
nav{font-size:13px;margin:6px 0 0}
nav a{margin-right:12px}
a{color:#1f5fa8}
code{font:12px/1.3 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #eceef1;text-align:right;vertical-align:top;white-space:nowrap}
thead th{background:#f2f4f6;font-weight:600;position:sticky;top:0}
th.l,td.l{text-align:left}
td.wrap{white-space:normal;min-width:180px;max-width:420px}
table.calls th{vertical-align:bottom;white-space:normal}
table.calls th,table.calls td{padding:4px 6px}
table.calls td.scenario{white-space:normal;overflow-wrap:anywhere;min-width:170px;max-width:240px}
.scroll{overflow-x:auto}
table.meta{width:auto;font-size:14px}
table.meta th{text-align:left;color:#555;font-weight:500;background:none;padding:2px 14px 2px 0;border:0}
table.meta td{text-align:left;padding:2px 0;border:0;white-space:normal}
tr.fail td{background:#fff0f0}
tr.invalid td{background:#fff8e6}
td.scen{background:#fafbfc;border-right:1px solid #eceef1}
.hint{color:#666;font-size:12px;font-weight:normal}
.ok-text{color:#1b7a35;font-weight:600}
.bad-text{color:#b42318;font-weight:600}
.warn-text{color:#9a5b00;font-weight:600}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;font-weight:600}
.banner.warn{background:#fff4de;border:1px solid #e8b04b;color:#6f4400}
.banner.bad{background:#fdecec;border:1px solid #e38b8b;color:#8a1c1c}
.banner.ok{background:#e9f6ed;border:1px solid #86c99a;color:#1b5e30}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:10px;margin:0 0 12px}
.tile{border:1px solid #e1e4e8;border-radius:6px;padding:8px 12px;background:#fbfcfd}
.tile .name{font-size:12px;color:#555}
.tile .big{font-size:22px;font-weight:700}
.tile .small{font-size:12px;color:#444}
table.figures{width:auto;min-width:70%}
table.figures td{font-size:14px}
table.figures td:not(.l){min-width:70px}
.run-charts{display:grid;gap:12px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
figure{margin:0}
figcaption{font-size:12px;color:#666;margin-top:2px}
svg.plot{max-width:100%;height:auto;display:block}
.none{color:#666;font-style:italic;margin:6px 0}
figure.empty{border:1px dashed #d5d9de;border-radius:6px;padding:10px 14px;display:flex;align-items:center}
article.call{border-top:1px solid #e1e4e8;padding-top:6px;margin-top:10px}
article.call:first-of-type{border-top:0;margin-top:0}
.cols{display:grid;grid-template-columns:2fr 1fr;gap:16px}
ol.transcript{list-style:none;padding:0;margin:0;font-size:13px;max-height:320px;overflow:auto}
ol.transcript li{padding:2px 0;border-bottom:1px dotted #eee}
ol.transcript li.agent b{color:#1f5fa8}
ol.transcript li.user b{color:#2e7d32}
.when{color:#888;font:12px ui-monospace,"DejaVu Sans Mono",monospace;white-space:pre}
.player{margin:8px 0}
audio{width:100%;max-width:420px}
ul.players{padding-left:18px}
ul.failures{margin:4px 0 0;padding-left:18px;font-size:12px;color:#444}
details{margin-top:10px}
summary{cursor:pointer;color:#1f5fa8}
footer{color:#777;font-size:12px;text-align:center;margin-top:18px}
@media (max-width:760px){.plots{grid-template-columns:1fr}.cols{grid-template-columns:1fr}}
"""


def render_html(
    folder: Path,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    *,
    history: list[dict] | None = None,
    overall: Aggregate | None = None,
    figures: Figures | None = None,
) -> str:
    """The page for a run folder's records and summary (see the module doc). `overall`, the records'
    aggregate when the caller has it, saves computing it again; `figures`, those `start_figures`
    drew ahead."""
    from uvbench.report import plots as plots_mod

    folder = Path(folder)
    run = _run_info(folder, records, summary, overall)
    thresholds = [t for t in summary.get("thresholds") or () if isinstance(t, dict)]
    shown = _pick_calls(records)
    levels = _levels_of(records, summary)
    by_level = plots_mod.level_layout(levels) is not None
    jobs = _figure_jobs(folder, records, shown, run.overall, history, plots_mod, thresholds, levels)
    ahead = figures.take() if figures is not None else {}
    drawn = {name: ahead[name] if name in ahead else job() for name, job in jobs.items()}
    plot_svgs = [drawn[n] for n in ("histogram", "cdf", "by_concurrency", "by_buffer", "barge_ins")]
    timelines = [drawn[n] for n in jobs if n.startswith("timeline:")]
    sections = [
        f'<section id="summary">{_banners(run)}{_header(run)}{_verdict(run, thresholds)}'
        '<nav><a href="#thresholds">thresholds</a><a href="#checks">checks</a>'
        '<a href="#over-the-run">over the run</a><a href="#plots">plots</a>'
        + ('<a href="#levels">by impairment level</a>' if by_level else "")
        + '<a href="#scenarios">per scenario</a><a href="#turns">per turn</a>'
        '<a href="#shown">calls in detail</a>'
        '<a href="#calls">all calls</a>'
        + ('<a href="#history">history</a>' if history else "")
        + "</nav></section>",
        f'<section id="headline"><h2>Headline figures <span class="hint">(valid calls)</span></h2>'
        f"{_headline(run)}</section>",
        f'<section id="thresholds"><h2>Thresholds</h2>{_thresholds(thresholds)}</section>',
        f'<section id="checks"><h2>Checks <span class="hint">(expectations, valid calls)</span></h2>'
        f"{_checks_section(run)}</section>",
        '<section id="over-the-run"><h2>Over the run</h2>'
        f"{_over_the_run(records, drawn, plots_mod)}</section>",
        f'<section id="plots"><h2>Latency and audio</h2>{_plots(plot_svgs)}</section>',
    ]
    if by_level:
        sections.append(
            '<section id="levels"><h2>By impairment level <span class="hint">(valid calls)</span></h2>'
            f"{_levels_section(levels, drawn, plots_mod)}</section>"
        )
    if history is not None:
        svg = drawn["history"]
        sections.append(
            '<section id="history"><h2>History</h2>'
            + _figure(svg, "Fewer than two runs with comparable figures: no history to draw yet.")
            + "</section>"
        )
    sections += [
        f'<section id="scenarios"><h2>Per scenario</h2>{_scenario_stats(run)}</section>',
        f'<section id="turns"><h2>Per turn <span class="hint">(the step\'s name, else step&lt;index&gt;; '
        f"valid calls)</span></h2>{_turns_section(run)}</section>",
        f'<section id="shown"><h2>Calls in detail <span class="hint">(who is heard when, the client '
        f"playback buffer, transcripts, recordings)</span></h2>{_shown_calls(run, shown, timelines)}"
        f"{_failed_players(run, shown)}</section>",
        f'<section id="calls"><h2>All calls <span class="hint">({len(records)}; failed first)</span></h2>'
        f"{_call_table(run)}</section>",
    ]
    generated = dt.datetime.now().replace(microsecond=0).isoformat(sep=" ")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>uvbench · {_esc(run.name)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(sections)
        + f"\n<footer>uvbench report · generated {generated} · every figure is in summary.json, "
        "calls.csv and stats.csv beside this file</footer>\n</main></body></html>\n"
    )


def write_html_report(
    folder: Path,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    *,
    history: list[dict] | None = None,
    overall: Aggregate | None = None,
    figures: Figures | None = None,
) -> Path:
    """Write `report.html` into the run folder (via a temporary file and a rename) and return its path."""
    folder = Path(folder)
    text = render_html(folder, records, summary, history=history, overall=overall, figures=figures)
    path = folder / REPORT_NAME
    write_text(path, text)
    return path
