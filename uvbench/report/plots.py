"""The HTML report's figures: matplotlib, rendered to SVG text to inline in the page (no files, no network).

Every function takes call records (the dicts of `results.jsonl`) or plain data and returns an SVG
string, or None when there is nothing to draw (the page then says so in a line). Figures are made
with matplotlib's object-oriented API (`matplotlib.figure.Figure`, never pyplot), so no display and
no global figure state are involved; rendering is serialised by a lock because rcParams are global.

Sizes are bounded whatever the run's size: histograms have at most `MAX_BINS` bins, a CDF at most
`MAX_POINTS` points, strip plots at most `MAX_DOTS` dots per series (each dot is an SVG element;
how many were drawn of how many is written beside them), latency against concurrency markers for
at most `MAX_MARKED_LEVELS` levels (a line alone past that), underflows for at most `MAX_BARS`
buffer sizes, a call's buffer level `BUFFER_BINS`
min/max pairs, a chart over the run's time `MAX_RUN_BUCKETS` buckets (its data gathered in one
pass over the records, then numpy), so a 10,000-call run renders as fast and as small as a 50-call
one.

Distributions use the same values as `uvbench.metrics.aggregate` (valid calls only, turns that were
not missed, every barge-in), so a plot's p95 is the summary's p95.
"""

from __future__ import annotations

import html
import io
import logging
import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uvbench.listener import Playback
from uvbench.metrics.aggregate import Aggregate, aggregate, group_metrics, group_rates, percentile
from uvbench.metrics.levels import is_snr_axis

NS = 1_000_000_000
MAX_BINS = 60
MAX_POINTS = 1500
MAX_DOTS = 500
MAX_BARS = 24
MAX_MARKED_LEVELS = 40
BUFFER_BINS = 500
SMALL = (5.9, 3.1)
"""Inches: a plot in the page's two-column grid (~570 px wide, shown at its own size)."""
WIDE = (11.4, 3.3)
"""Inches: a plot across the page."""
AXES_W_PT = 360
"""About how wide a SMALL figure's axes are, in points (to keep labels apart before drawing)."""
AXES_H_PT = 160
"""About how high a figure's axes are, in points (to leave room for labels before drawing)."""
MAX_SPANS = 400
"""Intervals drawn per lane of a call timeline (closer ones are merged past this)."""

COLORS = {
    "turn.ttfa_ms": "#1f6fb4",
    "turn.ttfb_ms": "#e07b1a",
    "interrupt.clear_ms": "#7b3fb0",
    "interrupt.silence_ms": "#1a9a6c",
    "user": "#2e9e44",
    "agent": "#1f6fb4",
    "buffer": "#1f6fb4",
    "underflow": "#d62728",
    "clear": "#7b3fb0",
}
LABELS = {
    "turn.ttfa_ms": "TTFA (turn.ttfa_ms)",
    "turn.ttfb_ms": "TTFB (turn.ttfb_ms)",
    "interrupt.clear_ms": "clear (interrupt.clear_ms)",
    "interrupt.silence_ms": "silence (interrupt.silence_ms)",
}

_LOCK = threading.Lock()
_RC = {
    "svg.fonttype": "none",  # text stays text: small, selectable, searchable
    "text.parse_math": False,  # a "$" in a scenario or run name is a dollar sign, not TeX
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "svg.hashsalt": "uvbench",
}

_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')
_PATH_D = re.compile(r'\sd="[^"]*"')
_DECIMALS = re.compile(r"(\d\.\d\d)\d+")
_svg_counter = iter(range(1, 1 << 62))


def number_ids_from(start: int) -> None:
    """Number this process's next figures from `start` (a forked helper drawing figures for the
    same page: its ids must not meet the parent's)."""
    global _svg_counter
    _svg_counter = iter(range(start, 1 << 62))


# ------------------------------------------------------------------------------------------------
# Rendering


def _render(build, label: str) -> str:
    """Run `build(Figure)` (it adds axes and returns the figure) and return the figure as inline SVG.

    The XML prolog, the DOCTYPE and the namespace declarations are dropped (an SVG element inside
    HTML needs none of them, and no URL is left in the page), and every id gets a prefix unique to
    the figure so several figures can share one page."""
    # matplotlib's notices (building its font cache on first use, ...) are not the run's business.
    quiet = logging.getLogger("matplotlib")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.ERROR)
    import matplotlib as mpl

    with _LOCK, mpl.rc_context(_RC):
        from matplotlib.figure import Figure

        fig = build(Figure)
        buf = io.StringIO()
        fig.savefig(
            buf,
            format="svg",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
        n = next(_svg_counter)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg, count=2)
    # Path coordinates to 0.01 pt: a third smaller, and no visible difference.
    svg = _PATH_D.sub(lambda m: _DECIMALS.sub(r"\1", m.group(0)), svg)
    prefix = f"uv{n}-"
    svg = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = _REF.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", svg)
    aria = html.escape(_text(label), quote=True)
    return svg.replace("<svg ", f'<svg class="plot" role="img" aria-label="{aria}" ', 1)


def warm() -> None:
    """Import matplotlib and draw a small figure once (its fonts, its SVG writer): what the first
    plot of a page would otherwise wait for, done ahead (`uvbench report` does it while the calls
    are recomputed in other processes)."""

    def build(Figure):
        fig = Figure(figsize=(1, 1), layout="constrained")
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], marker="o", label="warm")
        ax.set_title("warm")
        ax.legend()
        return fig

    _render(build, "warm")


def _text(value: Any) -> str:
    """User text for matplotlib: control characters removed (the SVG writer escapes the rest)."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", str(value))


def _text_pt(text: str, size: float) -> float:
    """About how wide `text` is at `size` points, in points (DejaVu Sans' digits are 0.64 em)."""
    return 0.64 * size * len(text)


def _spread(
    labels: Sequence[tuple[float, str]], span: float, size: float, width_pt: float = AXES_W_PT
) -> set:
    """The positions of `labels` (x, text; x ascending, in data units over `span`, drawn centred at
    `size` points across an axes `width_pt` wide) to write, from the left, so that no two meet."""
    kept: set = set()
    right = -math.inf
    for x, text in labels:
        half = _text_pt(text, size) / 2 + 2
        at = x / span * width_pt if span > 0 else 0.0
        if at - half >= right:
            kept.add(x)
            right = at + half
    return kept


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


# ------------------------------------------------------------------------------------------------
# Data from records (the same selection as the aggregates)


def metric_values(
    records: Iterable[dict[str, Any]], name: str, overall: Aggregate | None = None
) -> list[float]:
    """Sorted values of a metric over the valid calls (turns not missed, every barge-in).
    `overall`, the records' aggregate when the caller has it, saves computing it again."""
    stats = (overall or aggregate(records)).metrics.get(name)
    return list(stats.values) if stats is not None else []


def _thin(values: Sequence[float], limit: int) -> np.ndarray:
    """At most `limit` of sorted `values`, evenly spread over their ranks (keeps min and max)."""
    arr = np.asarray(values, dtype=float)
    if len(arr) <= limit:
        return arr
    return arr[np.unique(np.linspace(0, len(arr) - 1, limit).round().astype(int))]


def _series(
    records: Iterable[dict[str, Any]], metrics: Sequence[str], overall: Aggregate | None
) -> dict[str, list[float]] | None:
    """Each metric's sorted values (`metric_values`), the metrics without any left out; None when
    none has a value (nothing to draw)."""
    if overall is None:
        overall = aggregate(records)
    series = {m: metric_values(records, m, overall) for m in metrics}
    return {m: v for m, v in series.items() if v} or None


# ------------------------------------------------------------------------------------------------
# Turn latency


LATENCY_METRICS = ("turn.ttfa_ms", "turn.ttfb_ms")


def latency_histogram(
    records: Sequence[dict[str, Any]],
    metrics: Sequence[str] = LATENCY_METRICS,
    *,
    overall: Aggregate | None = None,
) -> str | None:
    """Histogram of turn latencies (TTFA and TTFB on shared bins) with TTFA's p50/p95/p99 marked."""
    series = _series(records, metrics, overall)
    if series is None:
        return None
    every = np.concatenate([np.asarray(v) for v in series.values()])
    lo, hi = float(every.min()), float(every.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 5, hi + 5
    n_bins = int(min(MAX_BINS, max(8, math.ceil(math.sqrt(len(every)) * 2))))
    edges = np.linspace(lo, hi, n_bins + 1)

    def build(Figure):
        fig = Figure(figsize=SMALL, layout="constrained")
        ax = fig.add_subplot()
        main = next(iter(series))
        for m, values in series.items():
            ax.hist(
                values,
                bins=edges,
                histtype="stepfilled" if m == main else "step",
                alpha=0.45 if m == main else 1.0,
                color=COLORS.get(m),
                linewidth=1.4,
                label=f"{LABELS.get(m, m)}  n={len(values)}",
            )
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            v = percentile(series[main], q)
            if v is not None:
                ax.axvline(v, color="#333333", linestyle=style, linewidth=1.0, label=f"p{q} {_fmt_ms(v)}")
        ax.set_title(f"Turn latency distribution ({LABELS.get(main, main).split(' ')[0]} percentiles marked)")
        ax.set_xlabel("latency after the user stopped speaking (ms)")
        ax.set_ylabel("turns")
        ax.yaxis.get_major_locator().set_params(integer=True)
        fig.legend(loc="outside lower center", ncols=3)  # below the axes: it never covers a bar
        return fig

    return _render(build, "turn latency distribution")


def latency_cdf(
    records: Sequence[dict[str, Any]],
    metrics: Sequence[str] = LATENCY_METRICS,
    *,
    overall: Aggregate | None = None,
) -> str | None:
    """Empirical CDF of turn latencies, in percent of turns, with the 50/95/99 % levels drawn."""
    series = _series(records, metrics, overall)
    if series is None:
        return None

    def build(Figure):
        fig = Figure(figsize=SMALL, layout="constrained")
        ax = fig.add_subplot()
        for m, values in series.items():
            x = _thin(values, MAX_POINTS)
            n = len(x)
            y = 100 * np.arange(1, n + 1) / n
            ax.step(
                np.concatenate([[x[0]], x]),
                np.concatenate([[0.0], y]),
                where="post",
                color=COLORS.get(m),
                linewidth=1.4,
                label=f"{LABELS.get(m, m)}  p95 {_fmt_ms(percentile(values, 95))}",
            )
        for level, dy in ((50, 0), (95, -3), (99, 3)):
            ax.axhline(level, color="#999999", linewidth=0.7, linestyle=":")
            ax.annotate(
                f"p{level}",
                (1.0, level),
                xycoords=("axes fraction", "data"),
                xytext=(2, dy),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color="#666666",
            )
        ax.set_ylim(0, 101)
        ax.set_title("Turn latency CDF")
        ax.set_xlabel("latency after the user stopped speaking (ms)")
        ax.set_ylabel("turns at or below (%)")
        ax.legend(loc="lower right")
        return fig

    return _render(build, "turn latency CDF")


def latency_by_concurrency(
    records: Sequence[dict[str, Any]], metrics: Sequence[str] = LATENCY_METRICS
) -> str | None:
    """p50 and p95 of turn latency per concurrency level (calls in flight when the call started)."""
    groups = group_metrics(records, "concurrency", metrics)
    levels = sorted(k for k in groups if isinstance(k, int | float) and not isinstance(k, bool))
    points: dict[str, list[tuple[float, float, float, int]]] = {}
    for m in metrics:
        for level in levels:
            stats = groups[level].get(m)
            if stats is not None and stats.count:
                points.setdefault(m, []).append((level, stats.p50, stats.p95, stats.count))
    if not points:
        return None

    def build(Figure):
        fig = Figure(figsize=SMALL, layout="constrained")
        ax = fig.add_subplot()
        marked = len(levels) <= MAX_MARKED_LEVELS  # past that the markers would hide the lines
        for m, rows in points.items():
            x = [r[0] for r in rows]
            color = COLORS.get(m)
            short = LABELS.get(m, m).split(" ")[0]
            ax.plot(
                x,
                [r[1] for r in rows],
                marker="o" if marked else None,
                color=color,
                linewidth=1.5,
                label=f"{short} p50",
            )
            ax.plot(
                x,
                [r[2] for r in rows],
                marker="^" if marked else None,
                color=color,
                linewidth=1.2,
                linestyle="--",
                label=f"{short} p95",
            )
        main = next(iter(points))
        if len(levels) == 1:
            span = 2.0
        else:
            span = 1.1 * (levels[-1] - levels[0])
        labelled = _spread([(r[0], f"n={r[3]}") for r in points[main]], span, 7)
        for level, _, p95, count in (r for r in points[main] if r[0] in labelled):
            ax.annotate(
                f"n={count}",
                (level, p95),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color="#555555",
            )
        ax.set_title("Turn latency against concurrency")
        ax.set_xlabel("calls in flight when the call started (concurrency)")
        ax.set_ylabel("latency (ms)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(levels) == 1:
            ax.set_xlim(levels[0] - 1, levels[0] + 1)
        else:
            pad = 0.05 * (levels[-1] - levels[0])
            ax.set_xlim(levels[0] - pad, levels[-1] + pad)
        ax.set_ylim(0, max(r[2] for rows in points.values() for r in rows) * 1.22 or 1.0)
        ax.legend(loc="best", ncols=2)
        return fig

    return _render(build, "turn latency against concurrency")


# ------------------------------------------------------------------------------------------------
# Underflows against the client buffer size


def client_buffer_ms(record: dict[str, Any]) -> float | None:
    """The call's clientBufferSizeMs as configured (config.call.medium.serverWebSocket), or None."""
    try:
        value = record["config"]["call"]["medium"]["serverWebSocket"]["clientBufferSizeMs"]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class BufferRow:
    buffer_ms: float | None
    calls: int
    underflows: int
    per_min: float | None
    """Underflows per minute of agent audio heard, greeting and turns (`audio.underflow_per_min`;
    None with too little audio to say)."""
    any_share: float | None
    """Share of calls with at least one underflow."""


def underflow_rows(records: Sequence[dict[str, Any]]) -> list[BufferRow]:
    """Underflow figures per clientBufferSizeMs (unset last), valid calls only."""
    groups = group_rates(records, client_buffer_ms)
    rows = []
    for key in sorted(groups, key=lambda k: (k is None, k if k is not None else 0)):
        valid, rates = groups[key]
        if not valid:
            continue
        per_min = rates["audio.underflow_per_min"]
        rows.append(
            BufferRow(
                buffer_ms=key,
                calls=valid,
                underflows=int(per_min.numerator),
                per_min=per_min.value,
                any_share=rates["call.any_underflow_rate"].value,
            )
        )
    return rows


def underflow_by_buffer(records: Sequence[dict[str, Any]]) -> str | None:
    """Underflows per minute of agent audio, one bar per clientBufferSizeMs (the `MAX_BARS` sizes
    with the most calls; the axis label says how many more there were)."""
    rows = underflow_rows(records)
    if not rows or all(r.per_min is None for r in rows):
        return None
    left_out = max(0, len(rows) - MAX_BARS)
    if left_out:
        kept = set(sorted(range(len(rows)), key=lambda k: (-rows[k].calls, k))[:MAX_BARS])
        rows = [r for k, r in enumerate(rows) if k in kept]

    labels = ["not set" if r.buffer_ms is None else f"{r.buffer_ms:g}" for r in rows]
    notes = []
    for r in rows:
        note = (
            "too little audio"
            if r.per_min is None
            else f"{r.underflows} in {r.calls} call{'s' if r.calls != 1 else ''}"
        )
        if r.any_share is not None:
            note += f"\n{100 * r.any_share:.0f}% of calls"
        notes.append(note)
    # What fits over a bar: the two-line note, else the count alone, else the count turned upright.
    slot = AXES_W_PT / len(rows)
    if max(_text_pt(line, 7) for n in notes for line in n.split("\n")) > slot - 4:
        notes = ["—" if r.per_min is None else f"{r.underflows}" for r in rows]
    upright = max(_text_pt(n, 7) for n in notes) > slot - 4
    note_pt = max(_text_pt(n, 7) for n in notes) if upright else 10 * max(n.count("\n") + 1 for n in notes)
    turn_ticks = max(_text_pt(label, 8) for label in labels) > slot - 3

    def build(Figure):
        fig = Figure(figsize=SMALL, layout="constrained")
        ax = fig.add_subplot()
        heights = [r.per_min or 0.0 for r in rows]
        bars = ax.bar(range(len(rows)), heights, color=COLORS["underflow"], alpha=0.75, width=0.6)
        top = max(heights) if max(heights) > 0 else 1.0
        for bar, note in zip(bars, notes, strict=True):
            ax.annotate(
                note,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                rotation=90 if upright else 0,
                fontsize=7,
                color="#444444",
            )
        ax.set_xticks(range(len(rows)), labels, rotation=90 if turn_ticks else 0)
        # Room above the highest bar for its note (the axes are about AXES_H_PT high).
        ax.set_ylim(0, top / max(0.3, 1 - (note_pt + 8) / AXES_H_PT))
        if max(heights) == 0:
            ax.text(
                0.5,
                0.55,
                "no underflow at any buffer size",
                transform=ax.transAxes,
                ha="center",
                color="#1b7a35",
                fontsize=10,
            )
        ax.set_title("Underflows against the client buffer size")
        more = f"\n{left_out} more sizes with fewer calls not drawn" if left_out else ""
        ax.set_xlabel(f"clientBufferSizeMs (ms){more}")
        ax.set_ylabel("underflows per min of agent audio")
        ax.grid(axis="x", visible=False)
        return fig

    return _render(build, "underflows against clientBufferSizeMs")


# ------------------------------------------------------------------------------------------------
# Barge-ins


BARGE_IN_METRICS = ("interrupt.silence_ms", "interrupt.clear_ms")


def barge_in_distribution(
    records: Sequence[dict[str, Any]],
    metrics: Sequence[str] = BARGE_IN_METRICS,
    *,
    overall: Aggregate | None = None,
) -> str | None:
    """Time to silence and to the clear after each barge-in: a box and each value as a dot (at most
    `MAX_DOTS` of them, spread evenly over the ranks, min and max kept; the box uses every value)."""
    series = _series(records, metrics, overall)
    if series is None:
        return None

    def build(Figure):
        fig = Figure(figsize=SMALL, layout="constrained")
        ax = fig.add_subplot()
        rng = np.random.default_rng(0)
        names = list(series)
        for y, m in enumerate(names):
            values = series[m]
            x = _thin(values, MAX_DOTS)
            jitter = rng.uniform(-0.17, 0.17, len(x))
            ax.scatter(x, y + jitter, s=10, color=COLORS.get(m), alpha=0.55, linewidths=0, zorder=3)
            # The box: p25..p75 with the median; the whiskers reach the minimum and the maximum.
            q1, med, q3 = (percentile(values, q) for q in (25, 50, 75))
            box = {"color": "#444444", "linewidth": 1.0, "zorder": 4}
            ax.plot([q1, q3, q3, q1, q1], [y - 0.25, y - 0.25, y + 0.25, y + 0.25, y - 0.25], **box)
            ax.plot([med, med], [y - 0.25, y + 0.25], color="#111111", linewidth=1.8, zorder=4)
            ax.plot([values[0], q1], [y, y], **box)
            ax.plot([q3, values[-1]], [y, y], **box)
        ax.set_yticks(
            range(len(names)),
            [
                f"{LABELS.get(m, m).split(' ')[0]}  n={len(series[m])}\n"
                f"p50 {_fmt_ms(percentile(series[m], 50))}\np95 {_fmt_ms(percentile(series[m], 95))}"
                + (f"\n{MAX_DOTS} drawn as dots" if len(series[m]) > MAX_DOTS else "")
                for m in names
            ],
        )
        ax.set_ylim(-0.6, len(names) - 0.4)
        lo = min(0.0, min(v[0] for v in series.values()))
        hi = max(v[-1] for v in series.values())
        ax.set_xlim(lo, hi + 0.06 * max(hi - lo, 1.0))
        ax.set_title("After a barge-in: until the agent is silent / the clear")
        ax.set_xlabel("time after the user started speaking over the agent (ms)")
        ax.grid(axis="y", visible=False)
        return fig

    return _render(build, "time to silence and to the clear after a barge-in")


# ------------------------------------------------------------------------------------------------
# One call: who spoke when, and the playback buffer


def buffer_level(
    pb: Playback, start_ns: int, end_ns: int, bins: int = BUFFER_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The listener's buffer B(t) (received - played - dropped, in ms of audio) over
    [start_ns, end_ns], as `bins` (centre_ns, min_ms, max_ms) triples.

    B is piecewise linear: it jumps up when a frame arrives, down when a clear drops unplayed
    audio, and falls at 1x while playback runs. It is evaluated exactly at every breakpoint (both
    sides of a jump) and each bin keeps its minimum and maximum, so a sawtooth of 20 ms frames
    drawn over a minute is an honest band, not an aliased line."""
    if end_ns <= start_ns:
        end_ns = start_ns + 1
    edges = np.linspace(start_ns, end_ns, bins + 1)
    rate = pb.sample_rate
    arrival = np.asarray(pb.arrival_ns, dtype=np.int64)
    samples = np.asarray(pb.samples, dtype=float)
    played = np.asarray(pb.played_samples, dtype=float)
    if len(arrival) == 0:
        zeros = np.zeros(bins)
        return (edges[:-1] + edges[1:]) / 2, zeros, zeros

    # Received: a step at each arrival.
    recv_cum = np.cumsum(samples)
    # Dropped: the unplayed part of a frame leaves at the first honoured clear at or after it arrived.
    clears = np.asarray(sorted(c.t_ns for c in pb.clears if c.honoured), dtype=np.int64)
    unplayed = samples - played
    has_unplayed = unplayed > 0
    if clears.size and has_unplayed.any():
        idx = np.searchsorted(clears, arrival[has_unplayed], side="left")
        ok = idx < clears.size
        drop_t = clears[idx[ok]]
        drop_n = unplayed[has_unplayed][ok]
        order = np.argsort(drop_t, kind="stable")
        drop_t, drop_cum = drop_t[order], np.cumsum(drop_n[order])
    else:
        drop_t, drop_cum = np.zeros(0, dtype=np.int64), np.zeros(0)
    # Played: frames play back to back in arrival order; each from its start for played/rate s.
    playing = played > 0
    starts = np.asarray([s for s, p in zip(pb.play_start_ns, pb.played_samples, strict=True) if p > 0], float)
    amounts = played[playing]
    before = np.concatenate([[0.0], np.cumsum(amounts)[:-1]]) if amounts.size else np.zeros(0)
    ends = starts + amounts * NS / rate if amounts.size else np.zeros(0)

    def played_at(t: np.ndarray) -> np.ndarray:
        if not amounts.size:
            return np.zeros(len(t))
        k = np.searchsorted(starts, t, side="right") - 1
        valid = k >= 0
        kk = np.clip(k, 0, None)
        partial = np.clip((t - starts[kk]) * rate / NS, 0, amounts[kk])
        return np.where(valid, before[kk] + partial, 0.0)

    def step_at(times: np.ndarray, cum: np.ndarray, t: np.ndarray, side: str) -> np.ndarray:
        if not times.size:
            return np.zeros(len(t))
        k = np.searchsorted(times, t, side=side)
        return np.where(k > 0, cum[np.clip(k - 1, 0, None)], 0.0)

    def level(t: np.ndarray, side: str) -> np.ndarray:
        # side "right": the value just after the events at t; "left": just before them.
        b = step_at(arrival, recv_cum, t, side) - step_at(drop_t, drop_cum, t, side) - played_at(t)
        return np.maximum(b, 0.0) * 1000 / rate

    points = np.unique(np.concatenate([arrival, drop_t, starts, ends, edges]).astype(float))
    points = points[(points >= start_ns) & (points <= end_ns)]
    right, left = level(points, "right"), level(points, "left")
    which = np.clip(np.searchsorted(edges, points, side="right") - 1, 0, bins - 1)
    hi = np.zeros(bins)
    lo = np.full(bins, np.inf)
    np.maximum.at(hi, which, np.maximum(right, left))
    np.minimum.at(lo, which, np.minimum(right, left))
    # A bin also reaches the value at its right edge (B is continuous from the left there).
    edge_left = level(edges[1:], "left")
    hi = np.maximum(hi, edge_left)
    lo = np.minimum(lo, edge_left)
    lo[np.isinf(lo)] = 0.0
    return (edges[:-1] + edges[1:]) / 2, lo, hi


def _merge(spans: Iterable[tuple[float, float]], min_gap: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a - out[-1][1] <= min_gap:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _bounded(spans: list[tuple[float, float]], total: float) -> list[tuple[float, float]]:
    """Merge spans closer than a growing gap until at most MAX_SPANS remain."""
    gap = 0.0
    while len(spans) > MAX_SPANS:
        gap = max(gap * 2, total / 2000)
        spans = _merge(spans, gap)
    return spans


@dataclass(frozen=True)
class CallView:
    """What a call timeline figure shows, in seconds from the call's origin (the websocket opening)."""

    title: str
    user: list[tuple[float, float]]
    agent: list[tuple[float, float]]
    underflows: list[tuple[float, float]]
    clears: list[float]
    buffer_t: np.ndarray
    buffer_lo: np.ndarray
    buffer_hi: np.ndarray
    client_buffer_ms: float | None
    end_s: float


def call_view(record: dict[str, Any], pb: Playback | None, title: str) -> CallView | None:
    """The lanes and buffer level of a call from its record's anchors and its listener playback."""
    anchors = record.get("anchors") or {}
    origin = next(
        (anchors[k] for k in ("ws_open_ns", "t0_ns", "created_ns") if isinstance(anchors.get(k), int)), None
    )
    if origin is None and pb is not None and pb.arrival_ns:
        origin = pb.arrival_ns[0]
    if origin is None:
        return None

    def s(t_ns: float) -> float:
        return (t_ns - origin) / NS

    user = [
        (s(t["t_ss_ns"]), s(t["t_se_ns"]))
        for t in record.get("turns") or ()
        if isinstance(t.get("t_ss_ns"), int) and isinstance(t.get("t_se_ns"), int)
    ] + [
        (s(b["t_bi_ns"]), s(b["t_be_ns"]))
        for b in record.get("barge_ins") or ()
        if isinstance(b.get("t_bi_ns"), int) and isinstance(b.get("t_be_ns"), int)
    ]
    ends = [anchors.get(k) for k in ("ws_closed_ns", "playback_end_ns") if isinstance(anchors.get(k), int)]
    end_ns = max(ends) if ends else None
    agent: list[tuple[float, float]] = []
    underflows: list[tuple[float, float]] = []
    clears: list[float] = []
    if pb is not None:
        agent = [(s(a), s(b)) for a, b in pb.audible]
        underflows = [(s(u.start_ns), s(u.end_ns)) for u in pb.underflows]
        clears = [s(c.t_ns) for c in pb.clears]
        if pb.arrival_ns:
            end_ns = max(end_ns or 0, pb.end_ns)
    else:
        underflows = [
            (s(u["start_ns"]), s(u["end_ns"]))
            for u in record.get("underflows") or ()
            if isinstance(u.get("start_ns"), int) and isinstance(u.get("end_ns"), int)
        ]
    if end_ns is None:
        last = [b for _, b in user + agent]
        if not last:
            return None
        end_ns = origin + int(max(last) * NS)
    end_ns = max(end_ns, origin + NS // 10)
    total = (end_ns - origin) / NS
    if pb is not None:
        t, lo, hi = buffer_level(pb, origin, end_ns)
        t = (t - origin) / NS
    else:
        t = lo = hi = np.zeros(0)
    return CallView(
        title=title,
        user=_bounded(user, total),
        agent=_bounded(agent, total),
        underflows=_bounded(underflows, total),
        clears=clears[:MAX_SPANS],
        buffer_t=t,
        buffer_lo=lo,
        buffer_hi=hi,
        client_buffer_ms=client_buffer_ms(record),
        end_s=total,
    )


def call_timeline(view: CallView) -> str:
    """Two panels over the call: who is heard when (user speech, agent audio as the listener hears
    it, clears), and the playback buffer level with the underflows shaded."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def build(Figure):
        fig = Figure(figsize=WIDE, layout="constrained")
        lanes, buf = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.5]})
        for y, spans, color in ((1, view.user, COLORS["user"]), (0, view.agent, COLORS["agent"])):
            if spans:
                lanes.broken_barh([(a, max(b - a, 1e-4)) for a, b in spans], (y - 0.32, 0.64), color=color)
        for x in view.clears:
            lanes.plot([x, x], [-0.45, 0.45], color=COLORS["clear"], linewidth=1.6)
        lanes.set_yticks([0, 1], ["agent (heard)", "user (speech)"])
        lanes.set_ylim(-0.6, 1.6)
        lanes.grid(axis="y", visible=False)
        for a, b in view.underflows:
            for ax in (lanes, buf):
                ax.axvspan(a, max(b, a + 1e-3), color=COLORS["underflow"], alpha=0.3, linewidth=0)
        if len(view.buffer_t):
            buf.fill_between(
                view.buffer_t,
                view.buffer_lo,
                view.buffer_hi,
                facecolor=COLORS["buffer"],
                edgecolor=COLORS["buffer"],
                alpha=0.55,
                linewidth=0.6,
                step="mid",
            )
        top = float(view.buffer_hi.max()) if len(view.buffer_hi) else 0.0
        handles = [
            Patch(color=COLORS["user"], label="user speech"),
            Patch(color=COLORS["agent"], label="agent audio heard"),
            Line2D([], [], color=COLORS["clear"], linewidth=1.6, label="playback_clear_buffer"),
            Patch(color=COLORS["underflow"], alpha=0.3, label=f"underflow ({len(view.underflows)})"),
        ]
        cb = view.client_buffer_ms
        if not len(view.buffer_t):
            buf.text(
                0.5,
                0.5,
                "buffer level unknown: the call's timeline is not available",
                transform=buf.transAxes,
                ha="center",
                va="center",
                color="#666666",
            )
            buf.set_yticks([])
        elif cb is not None:
            if cb <= max(top, 1.0) * 1.5:
                buf.axhline(cb, color="#555555", linestyle="--", linewidth=0.9)
                top = max(top, cb)
                handles.append(
                    Line2D([], [], color="#555555", linestyle="--", label=f"clientBufferSizeMs {cb:g}")
                )
            else:
                handles.append(Line2D([], [], color="none", label=f"clientBufferSizeMs {cb:g} (off scale)"))
        buf.set_ylim(0, max(top * 1.15, 1.0))
        buf.set_ylabel("buffered (ms)")
        buf.set_xlabel("time since the websocket opened (s)")
        buf.set_xlim(0, view.end_s)
        lanes.legend(
            handles=handles,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=len(handles),
            fontsize=7,
            handlelength=1.2,
            columnspacing=1.0,
            borderaxespad=0.2,
        )
        return fig

    return _render(build, f"timeline of {view.title}")


# ------------------------------------------------------------------------------------------------
# Over the run's time


BUCKET_WIDTHS_S = (
    *(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30),
    *(60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400),
)
"""Bucket widths a chart over the run may use (no two more than 2.5x apart, so the widest that
fits gives at least MAX_RUN_BUCKETS / 2.5 buckets)."""
MAX_RUN_BUCKETS = 120
RUN_METRIC = "turn.ttfa_ms"
OUTCOME_KINDS = ("completed", "failed", "invalid")
OUTCOME_COLORS = ("#2e9e44", "#d62728", "#e8a33b")
THRESHOLD_REACH = 2.5
"""A threshold line is drawn when its level is at most this many times the chart's highest point
(further up, drawing it would flatten the data: it is named in a corner instead)."""
_THRESHOLD_EXPR = re.compile(
    r"^\s*(?:p\(\s*(?P<p>\d+(?:\.\d+)?)\s*\)|p(?P<short>\d+(?:\.\d+)?)|(?P<agg>avg|med|max|min))"
    r"\s*(?P<op>===|==|!=|<=|>=|<|>)\s*(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


def bucket_width(span_s: float) -> float:
    """The narrowest of `BUCKET_WIDTHS_S` that cuts `span_s` seconds into at most `MAX_RUN_BUCKETS`."""
    for width in BUCKET_WIDTHS_S:
        if span_s / width <= MAX_RUN_BUCKETS:
            return float(width)
    return float(math.ceil(span_s / MAX_RUN_BUCKETS))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _width_text(width_s: float) -> str:
    if width_s < 1:
        return f"{width_s * 1000:g} ms"
    if width_s < 120 or width_s % 60:
        return f"{width_s:g} s"
    if width_s < 7200 or width_s % 3600:
        return f"{width_s / 60:g} min"
    return f"{width_s / 3600:g} h"


@dataclass(frozen=True)
class RunSeries:
    """Every call, turn, underflow and barge-in of a run placed in run time (seconds since the run's
    start), cut into `buckets` buckets of `width_s`; the charts over the run draw its per-bucket
    figures. Calls without a start time (`start_offset_s`: runs from before it was recorded) are
    only counted, in `unplaced`."""

    width_s: float
    buckets: int
    unplaced: int
    starts: np.ndarray
    """Each placed call's start."""
    ends: np.ndarray
    """Each placed call's end (the websocket closed; else its start plus its duration)."""
    outcomes: np.ndarray
    """Each placed call's outcome: an index into `OUTCOME_KINDS`."""
    turn_t: np.ndarray
    """Each answered turn of a valid call: when the user stopped speaking (`t_se`)."""
    turn_ms: np.ndarray
    """... and its `RUN_METRIC` (figures set apart are not in a turn's metrics: not here either)."""
    underflow_t: np.ndarray
    """Each underflow of a valid call: when the buffer ran dry."""
    barge_t: np.ndarray
    """Each judged barge-in of a valid call: when the user started speaking over the agent."""
    barge_ok: np.ndarray
    """... and whether it stopped the agent."""

    @property
    def placed(self) -> int:
        return len(self.starts)

    @property
    def edges(self) -> np.ndarray:
        return np.arange(self.buckets + 1) * self.width_s

    @property
    def width_text(self) -> str:
        return _width_text(self.width_s)

    def _index(self, t: np.ndarray) -> np.ndarray:
        return np.clip((t // self.width_s).astype(np.int64), 0, self.buckets - 1)

    def count(self, t: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Events per bucket (those `where` is true for)."""
        idx = self._index(t if where is None else t[where])
        return np.bincount(idx, minlength=self.buckets)

    def latency(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """p50, p95 (NaN where a bucket has no turn) and the number of turns, per bucket."""
        p50 = np.full(self.buckets, np.nan)
        p95 = np.full(self.buckets, np.nan)
        idx = self._index(self.turn_t)
        order = np.lexsort((self.turn_ms, idx))
        values, idx = self.turn_ms[order], idx[order]
        bounds = np.searchsorted(idx, np.arange(self.buckets + 1))
        counts = np.diff(bounds)
        for b in np.flatnonzero(counts):  # linear interpolation, as `percentile` and the summary
            p50[b], p95[b] = np.percentile(values[bounds[b] : bounds[b + 1]], (50, 95))
        return p50, p95, counts

    def in_flight(self) -> tuple[np.ndarray, np.ndarray]:
        """Calls in flight per bucket: the time-weighted mean and the peak."""
        n = self.placed
        times = np.concatenate([self.starts, self.ends])
        steps = np.concatenate([np.ones(n), -np.ones(n)])
        order = np.lexsort((steps, times))  # an end before a start at the same instant
        times, level = times[order], np.cumsum(steps[order])
        # Area under the step function up to each event, then up to each bucket edge.
        area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(times))]) if n else np.zeros(0)
        edges = self.edges
        k = np.searchsorted(times, edges, side="right") - 1
        kk = np.clip(k, 0, None)
        at_edge = np.where(k >= 0, level[kk], 0.0) if n else np.zeros(len(edges))
        area_edge = np.where(k >= 0, area[kk] + at_edge * (edges - times[kk]), 0.0) if n else at_edge
        mean = np.diff(area_edge) / self.width_s
        peak = at_edge[:-1].copy()
        if n:
            inside = times < edges[-1]
            np.maximum.at(peak, self._index(times[inside]), level[inside])
        return mean, peak

    def outcome_counts(self) -> np.ndarray:
        """Calls ended per bucket, one row per `OUTCOME_KINDS`."""
        return np.stack([self.count(self.ends, self.outcomes == k) for k in range(len(OUTCOME_KINDS))])


def _number(value: Any) -> bool:
    kind = type(value)
    if kind is int:  # the common cases first: run_series asks this of every call's every time
        return True
    if kind is float:
        return value - value == 0.0  # finite (an infinity or NaN less itself is NaN)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def start_offset(record: dict[str, Any]) -> float | None:
    """When the call started, in seconds since the run's start (its `start_offset_s` tag), or None
    (a run recorded before the tag was)."""
    tags = record.get("tags")
    value = tags.get("start_offset_s") if isinstance(tags, dict) else None
    if value is None:
        value = record.get("start_offset_s")
    return float(value) if _number(value) else None


def run_series(records: Iterable[dict[str, Any]]) -> RunSeries:
    """The run's calls and events in run time, in one pass over the records.

    A call starts at its `start_offset_s` tag; an event of it at that plus its time after the call's
    `anchors.create_sent_ns` (the `_ns` values of one record share a clock; no two records' are
    compared). Latency, underflows and barge-ins are the valid calls' (as the aggregates); calls in
    flight, calls started and outcomes are every call's."""
    starts: list[float] = []
    ends: list[float] = []
    kinds: list[int] = []
    turn_t: list[float] = []
    turn_ms: list[float] = []
    under_t: list[float] = []
    barge_t: list[float] = []
    barge_ok: list[bool] = []
    unplaced = 0
    for r in records:
        off = start_offset(r)
        if off is None:
            unplaced += 1
            continue
        anchors = r.get("anchors") or {}
        origin = anchors.get("create_sent_ns")
        if not _number(origin):
            origin = anchors.get("ws_connect_started_ns")
            if not _number(origin):
                origin = anchors.get("ws_open_ns") if _number(anchors.get("ws_open_ns")) else None
        closed = anchors.get("ws_closed_ns")
        if origin is not None and _number(closed):
            end = off + (closed - origin) / NS
        else:
            duration = r.get("duration_ms")
            if not _number(duration):
                duration = (r.get("metrics") or {}).get("call.duration_ms")
            end = off + duration / 1000 if _number(duration) else off
        outcome = str(r.get("outcome") or (r.get("metrics") or {}).get("call.outcome") or "")
        kind = 0 if outcome == "completed" else 2 if outcome.startswith("invalid:") else 1
        starts.append(off)
        ends.append(max(end, off))
        kinds.append(kind)
        if kind == 2 or origin is None:
            continue
        for t in r.get("turns") or ():
            v = (t.get("metrics") or {}).get(RUN_METRIC)
            if not t.get("missed") and _number(v) and _number(t.get("t_se_ns")):
                turn_t.append(off + (t["t_se_ns"] - origin) / NS)
                turn_ms.append(v)
        for u in r.get("underflows") or ():
            if isinstance(u, dict) and _number(u.get("start_ns")):
                under_t.append(off + (u["start_ns"] - origin) / NS)
        for b in r.get("barge_ins") or ():
            if b.get("success") is not None and _number(b.get("t_bi_ns")):
                barge_t.append(off + (b["t_bi_ns"] - origin) / NS)
                barge_ok.append(bool(b["success"]))
    arrays = [np.asarray(x, dtype=float) for x in (starts, ends, turn_t, under_t, barge_t)]
    span = max((float(a.max()) for a in arrays if a.size), default=0.0)
    width = bucket_width(max(span, 1e-3))
    return RunSeries(
        width_s=width,
        buckets=max(1, math.ceil(span / width - 1e-9)),
        unplaced=unplaced,
        starts=arrays[0],
        ends=arrays[1],
        outcomes=np.asarray(kinds, dtype=np.int8),
        turn_t=arrays[2],
        turn_ms=np.asarray(turn_ms, dtype=float),
        underflow_t=arrays[3],
        barge_t=arrays[4],
        barge_ok=np.asarray(barge_ok, dtype=bool),
    )


@dataclass(frozen=True)
class ThresholdLine:
    """A threshold drawn on a chart: its level, its label (the expression, with any tag filter)."""

    value: float
    label: str
    passed: bool


def threshold_lines(
    thresholds: Iterable[dict[str, Any]] | None, metric: str = RUN_METRIC
) -> list[ThresholdLine]:
    """The thresholds (summary.json's `thresholds` entries, `ThresholdResult.to_json`) on `metric`
    that are a level of it (`p(N)`, `avg`, `med`, `max`, `min`): the ones a chart of the metric can
    draw as a horizontal line."""
    out = []
    for t in thresholds or ():
        if not isinstance(t, dict):
            continue
        key = str(t.get("metric") or "")
        name, brace, tags = key.partition("{")
        m = _THRESHOLD_EXPR.match(str(t.get("expression") or ""))
        if name.strip() != metric or m is None:
            continue
        label = " ".join(str(t["expression"]).split()) + (f" {{{tags}" if brace else "")
        out.append(ThresholdLine(float(m["num"]), _text(label), bool(t.get("passed"))))
    return out


def _run_axes(ax, series: RunSeries, *, xlabel: bool = True) -> None:
    ax.set_xlim(0, series.buckets * series.width_s)
    if xlabel:
        ax.set_xlabel(f"seconds since the run started (buckets of {series.width_text})")


def _isolated(y: np.ndarray) -> np.ndarray:
    """The finite points with no finite neighbour (a line alone would not show them)."""
    ok = np.isfinite(y)
    before = np.concatenate([[False], ok[:-1]])
    after = np.concatenate([ok[1:], [False]])
    return ok & ~before & ~after


def run_latency(series: RunSeries, thresholds: Iterable[dict[str, Any]] | None = None) -> str | None:
    """TTFA p50 and p95 per bucket of the run, turns placed by when the user stopped speaking; the
    thresholds on TTFA's levels drawn as lines (red when breached). None when no turn was placed."""
    if not series.turn_t.size:
        return None
    p50, p95, counts = series.latency()
    lines = threshold_lines(thresholds)
    top = float(np.nanmax(p95))
    drawn = [line for line in lines if 0 <= line.value <= max(top, 1.0) * THRESHOLD_REACH]
    off_chart = [line for line in lines if line not in drawn]
    top = max([top, *(line.value for line in drawn)]) or 1.0
    x = series.edges[:-1] + series.width_s / 2
    short = LABELS[RUN_METRIC].split(" ")[0]

    def build(Figure):
        fig = Figure(figsize=WIDE, layout="constrained")
        ax = fig.add_subplot()
        color = COLORS[RUN_METRIC]
        for y, style, width, name in ((p50, "-", 1.5, "p50"), (p95, "--", 1.2, "p95")):
            ax.plot(x, y, color=color, linestyle=style, linewidth=width, label=f"{short} {name}")
            alone = _isolated(y)
            if alone.any():
                ax.plot(x[alone], y[alone], linestyle="none", marker="o", markersize=3.5, color=color)
        ylim = top * 1.15
        # Labels at the lines' right ends, nudged up where two levels are closer than a label's
        # height (the axes are about AXES_H_PT points high).
        last_pt = -math.inf
        for line in sorted(drawn, key=lambda t: t.value):
            c = "#d62728" if not line.passed else "#555555"
            ax.axhline(line.value, color=c, linewidth=1.1, linestyle="-" if not line.passed else (0, (5, 2)))
            at_pt = line.value / ylim * AXES_H_PT
            lift = max(0.0, last_pt + 10 - at_pt)
            last_pt = at_pt + lift
            ax.annotate(
                f"{line.label} {'✓' if line.passed else '✗ breached'}",
                (1.0, line.value),
                xycoords=("axes fraction", "data"),
                xytext=(-3, 1.5 + lift),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=7.5,
                color=c,
                fontweight="normal" if line.passed else "bold",
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
            )
        if off_chart:
            ax.text(
                0.005,
                0.98,
                "off the chart: "
                + ", ".join(f"{t.label} {'✓' if t.passed else '✗'}" for t in off_chart[:4])
                + (f" and {len(off_chart) - 4} more" if len(off_chart) > 4 else ""),
                transform=ax.transAxes,
                va="top",
                fontsize=7.5,
                color="#d62728" if any(not t.passed for t in off_chart) else "#555555",
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
            )
        _run_axes(ax, series)
        ax.set_ylim(0, max(ylim, (last_pt + 12) / AXES_H_PT * ylim))
        ax.set_ylabel("TTFA (ms)")
        ax.set_title(
            f"Turn latency over the run: {RUN_METRIC} p50 / p95 per {series.width_text}"
            f" ({_count(int(counts.sum()), 'turn')} of valid calls)"
        )
        fig.legend(loc="outside lower center", ncols=2)
        return fig

    return _render(build, "turn latency over the run")


def run_load(series: RunSeries) -> str | None:
    """Calls in flight (peak and mean per bucket) above calls started per second; None without a
    placed call."""
    if not series.placed:
        return None
    mean, peak = series.in_flight()
    started = series.count(series.starts) / series.width_s
    edges = series.edges

    def build(Figure):
        fig = Figure(figsize=WIDE, layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.6, 1]})
        top.stairs(peak, edges, color="#1f6fb4", alpha=0.25, fill=True, label="calls in flight: peak")
        top.stairs(mean, edges, color="#1f6fb4", linewidth=1.4, label="calls in flight: mean")
        top.set_ylim(0, max(float(peak.max()), 1.0) * 1.15)
        top.set_ylabel("calls in flight")
        top.yaxis.get_major_locator().set_params(integer=True)
        top.set_title(
            f"Calls in flight and calls started, per {series.width_text} ({_count(series.placed, 'call')})"
        )
        fig.legend(loc="outside lower center", ncols=2)
        bottom.stairs(started, edges, color="#555555", fill=True, alpha=0.6)
        bottom.set_ylim(0, max(float(started.max()), 1e-9) * 1.2)
        bottom.set_ylabel("started /s")
        _run_axes(bottom, series)
        return fig

    return _render(build, "calls in flight and calls started over the run")


def run_outcomes(series: RunSeries) -> str | None:
    """Calls ended per bucket, stacked by outcome; None without a placed call."""
    if not series.placed:
        return None
    counts = series.outcome_counts()
    edges = series.edges

    def build(Figure):
        fig = Figure(figsize=WIDE, layout="constrained")
        ax = fig.add_subplot()
        bottom = np.zeros(series.buckets)
        for k, (kind, color) in enumerate(zip(OUTCOME_KINDS, OUTCOME_COLORS, strict=True)):
            if counts[k].any():
                ax.stairs(
                    bottom + counts[k],
                    edges,
                    baseline=bottom,
                    fill=True,
                    color=color,
                    alpha=0.8,
                    label=f"{kind} {int(counts[k].sum())}",
                )
            bottom = bottom + counts[k]
        ax.set_ylim(0, max(float(bottom.max()), 1.0) * 1.15)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("calls ended")
        ax.set_title(f"Outcomes over the run: calls ended per {series.width_text}")
        fig.legend(loc="outside lower center", ncols=3)
        _run_axes(ax, series)
        return fig

    return _render(build, "outcomes over the run")


def run_audio(series: RunSeries) -> str | None:
    """Underflows per bucket above barge-ins per bucket (stopped the agent / did not); None without
    a placed call."""
    if not series.placed:
        return None
    underflows = series.count(series.underflow_t)
    ok = series.count(series.barge_t, series.barge_ok)
    failed = series.count(series.barge_t, ~series.barge_ok)
    edges = series.edges

    def empty(ax, text: str) -> None:
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#666666")
        ax.set_ylim(0, 1)
        ax.set_yticks([])

    def build(Figure):
        fig = Figure(figsize=WIDE, layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True)
        if underflows.any():
            top.stairs(underflows, edges, fill=True, color=COLORS["underflow"], alpha=0.75)
            top.set_ylim(0, float(underflows.max()) * 1.15)
            top.yaxis.get_major_locator().set_params(integer=True)
        else:
            empty(top, "no underflow in any valid call")
        top.set_ylabel("underflows")
        top.set_title(
            f"Underflows and barge-ins over the run, per {series.width_text}"
            f" ({_count(int(underflows.sum()), 'underflow')}, {_count(len(series.barge_t), 'barge-in')})"
        )
        if len(series.barge_t):
            bottom.stairs(
                ok,
                edges,
                fill=True,
                color=COLORS["interrupt.silence_ms"],
                alpha=0.8,
                label=f"stopped the agent {int(ok.sum())}",
            )
            bottom.stairs(
                ok + failed,
                edges,
                baseline=ok,
                fill=True,
                color="#d62728",
                alpha=0.8,
                label=f"did not stop it {int(failed.sum())}",
            )
            bottom.set_ylim(0, float((ok + failed).max()) * 1.2)
            bottom.yaxis.get_major_locator().set_params(integer=True)
            fig.legend(loc="outside lower center", ncols=2)
        else:
            empty(bottom, "no barge-in in any valid call")
        bottom.set_ylabel("barge-ins")
        _run_axes(bottom, series)
        return fig

    return _render(build, "underflows and barge-ins over the run")


# ------------------------------------------------------------------------------------------------
# History of runs


HISTORY_METRICS = ("turn.ttfa_ms", "interrupt.silence_ms")
HISTORY_STATS = ("p50", "p95")
"""The figures a run's page reads from the history (every metric with every stat)."""
HISTORY_PREFERRED = ("turn.ttfa_ms.p95", "turn.ttfa_ms.p50", "interrupt.silence_ms.p95")
"""The lines drawn first, in this order; the other figures read follow by name."""
MAX_HISTORY_RUNS = 40
MAX_HISTORY_LINES = 6


def history_plot(history: Sequence[dict[str, Any]] | None) -> str | None:
    """Millisecond metrics across past runs (`{"run", "started", "metrics": {name: value}}`), when at
    least two runs have a value of the same metric. The last `MAX_HISTORY_RUNS` runs by start time."""
    if not history:
        return None
    runs = [h for h in history if isinstance(h, dict) and isinstance(h.get("metrics"), dict)]
    runs.sort(key=lambda h: str(h.get("started") or ""))
    runs = runs[-MAX_HISTORY_RUNS:]

    def numeric(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    counts: dict[str, int] = {}
    for h in runs:
        for name, v in h["metrics"].items():
            if "_ms" in name and numeric(v):
                counts[name] = counts.get(name, 0) + 1
    names = [n for n in HISTORY_PREFERRED if counts.get(n, 0) >= 2]
    names += sorted(n for n, c in counts.items() if c >= 2 and n not in names)
    names = names[:MAX_HISTORY_LINES]
    if not names:
        return None

    def build(Figure):
        fig = Figure(figsize=WIDE, layout="constrained")
        ax = fig.add_subplot()
        x = np.arange(len(runs))
        for name in names:
            y = [h["metrics"].get(name) if numeric(h["metrics"].get(name)) else np.nan for h in runs]
            ax.plot(x, y, marker="o", markersize=3.5, linewidth=1.3, label=name)
        labels = [_text(h.get("run") or "")[:28] for h in runs]
        step = max(1, math.ceil(len(runs) / 14))
        ax.set_xticks(x[::step], labels[::step], rotation=30, ha="right")
        ax.set_title(f"Across the last {len(runs)} runs")
        ax.set_ylabel("latency (ms)")
        top = np.nanmax([h["metrics"].get(n) for h in runs for n in names if numeric(h["metrics"].get(n))])
        ax.set_ylim(0, float(top) * 1.25 or 1.0)
        ax.legend(loc="upper left", ncols=min(3, len(names)))
        return fig

    return _render(build, "figures across runs")


# ------------------------------------------------------------------------------------------------
# Figures per impairment level (`uvbench.metrics.levels`)


LEVEL_FIGURES = ("turn.ttfa_ms", "turn.miss_rate", "call.false_barge_in_count", "talk_over", "underflows")
"""The figures drawn per impairment level, one plot each."""
LEVEL_LABEL_CHARS = 28
"""A level's label is cut to this many characters on an axis or in a legend (the table has it whole)."""
LEVEL_COLORS = (
    "#1f6fb4",
    "#e07b1a",
    "#2e9e44",
    "#d62728",
    "#7b3fb0",
    "#8c564b",
    "#d4539b",
    "#6f6f6f",
    "#a8a21c",
    "#17a2b8",
)
"""One color per line (a level of the other dimension); as many as `levels.MAX_LEVELS`."""
LEGEND_W_PT = 400
"""About how wide a legend below a SMALL figure may be, in points."""
LEGEND_ROW_IN = 0.2
"""Inches a legend row takes."""
LOG_X_RATIO = 20
"""A numeric axis of positive values spanning this ratio or more is drawn on a log scale."""


def _short(label: str) -> str:
    label = _text(label)
    return label if len(label) <= LEVEL_LABEL_CHARS else label[: LEVEL_LABEL_CHARS - 1] + "…"


def _level_value(figures: dict[str, Any], key: str, stat: str) -> float:
    """A level's figure (`key`'s `stat`) as a float, NaN when it has none (a gap in its line)."""
    entry = figures.get(key)
    value = entry.get(stat) if isinstance(entry, dict) else None
    return float(value) if _number(value) else math.nan


_LEVEL_SERIES: dict[str, tuple[tuple[str, str, str, float, str], ...]] = {
    # figure -> (legend name, key, stat, scale, line style) per series
    "turn.ttfa_ms": (("p50", "turn.ttfa_ms", "p50", 1, "-"), ("p95", "turn.ttfa_ms", "p95", 1, "--")),
    "turn.miss_rate": (("missed", "turn.miss_rate", "value", 100, "-"),),
    "call.false_barge_in_count": (("per call", "call.false_barge_in_count", "mean", 1, "-"),),
    "talk_over": (
        ("turns", "turn.talk_over_ms", "mean", 1, "-"),
        ("barge-ins", "interrupt.talk_over_ms", "mean", 1, "--"),
    ),
    "underflows": (("per min", "audio.underflow_per_min", "value", 1, "-"),),
}
_LEVEL_TEXT = {
    # figure -> (title, y label, what the plot is called in the page)
    "turn.ttfa_ms": ("Turn latency (TTFA) p50 / p95", "turn.ttfa_ms (ms)", "turn latency"),
    "turn.miss_rate": ("Missed turns", "turns missed (%)", "missed turns"),
    "call.false_barge_in_count": ("False barge-ins", "false barge-ins per call", "false barge-ins"),
    "talk_over": ("Talk-over (mean)", "agent heard over the user (ms)", "talk-over"),
    "underflows": ("Underflows", "underflows per min of agent audio", "underflows"),
}


@dataclass(frozen=True)
class LevelLayout:
    """How figures per impairment level are laid out: one dimension along x, a line per level of
    the other (or a single line)."""

    dimension: str
    """Along x."""
    axis: str | None
    """Its numeric matrix axis ("caller.noise.snr_db"), None when categorical."""
    x: list[float]
    labels: list[str]
    """The x levels' labels, in x order."""
    lines: list[tuple[str | None, list[dict[str, Any]]]]
    """(the other dimension's level or None for a single line, each x level's figures or {})."""

    @property
    def descending(self) -> bool:
        """An SNR axis: drawn high to low, so noisier calls are to the right."""
        return is_snr_axis(self.axis)

    @property
    def log(self) -> bool:
        return bool(self.axis) and min(self.x) > 0 and max(self.x) / min(self.x) >= LOG_X_RATIO


def level_layout(levels: dict[str, Any] | None) -> LevelLayout | None:
    """The layout of summary.json's `levels`: along x the dimension that varies (both vary: the
    numeric one, else the one with more levels, the caller's on a tie), a line per level of the
    other; None when no dimension varies."""
    dims = (levels or {}).get("dimensions")
    if not isinstance(dims, dict):
        return None
    dims = {n: d for n, d in dims.items() if isinstance(d, dict) and isinstance(d.get("levels"), list)}
    if not dims:
        return None

    def rank(name: str) -> tuple[bool, int, bool]:
        d = dims[name]
        return (bool(d.get("axis")), len(d["levels"]), name == "caller")

    along = max(dims, key=rank)
    d = dims[along]
    kept = [lv for lv in d["levels"] if isinstance(lv, dict) and _number(lv.get("x"))]
    x = [float(lv["x"]) for lv in kept]
    labels = [str(lv.get("label")) for lv in kept]
    other = next((n for n in dims if n != along), None)
    cells = [c for c in (levels or {}).get("cross") or () if isinstance(c, dict)]
    if other is None or not cells:
        lines: list[tuple[str | None, list[dict[str, Any]]]] = [(None, kept)]
    else:
        at = {(str(c.get(along)), str(c.get(other))): c for c in cells}
        lines = [
            (str(lv.get("label")), [at.get((label, str(lv.get("label"))), {}) for label in labels])
            for lv in dims[other]["levels"]
            if isinstance(lv, dict)
        ]
    return LevelLayout(along, d.get("axis"), x, labels, lines)


def level_x_label(layout: LevelLayout) -> str:
    """The x axis's label: the matrix axis (SNR and jitter named plainly), else the dimension."""
    if not layout.axis:
        return f"{layout.dimension} level"
    axis = _text(layout.axis)
    if layout.descending:
        return f"SNR (dB), noisier to the right: {axis}"
    if axis.endswith("_ms"):
        plain = "jitter" if "jitter" in axis else axis.rsplit(".", 1)[-1][:-3].replace("_", " ")
        return f"{plain} (ms): {axis}"
    return axis


def level_plot(levels: dict[str, Any] | None, figure: str) -> str | None:
    """One figure (`LEVEL_FIGURES`) against the impairment levels of summary.json's `levels`;
    None when there is no level or no value of it at any level."""
    layout = level_layout(levels)
    if layout is None or figure not in _LEVEL_SERIES:
        return None
    series = _LEVEL_SERIES[figure]
    ys = {
        (k, s): [scale * _level_value(f, key, stat) for f in points]
        for k, (_, points) in enumerate(layout.lines)
        for s, (_, key, stat, scale, _) in enumerate(series)
    }
    drawn = [
        s
        for s in range(len(series))
        if any(not math.isnan(v) for k in range(len(layout.lines)) for v in ys[(k, s)])
    ]
    if not drawn:
        return None
    title, ylabel, name = _LEVEL_TEXT[figure]
    categorical = layout.axis is None
    ticks = [_short(label) for label in layout.labels]
    slanted = categorical and sum(_text_pt(t, 8) + 6 for t in ticks) > AXES_W_PT
    several = layout.lines[0][0] is not None
    names = [_short(level or "") for level, _ in layout.lines] if several else []
    names += [series[s][0] for s in drawn] if len(drawn) > 1 else []
    ncols = max(1, min(len(names), int(LEGEND_W_PT // (max(map(len, names), default=0) * 0.64 * 8 + 30))))
    legend_rows = math.ceil(len(names) / ncols)

    def build(Figure):
        from matplotlib.lines import Line2D

        # Each legend row past the first makes the figure taller, not its axes smaller.
        fig = Figure(
            figsize=(SMALL[0], SMALL[1] + LEGEND_ROW_IN * max(0, legend_rows - 1)), layout="constrained"
        )
        ax = fig.add_subplot()
        for k in range(len(layout.lines)):
            color = LEVEL_COLORS[k % len(LEVEL_COLORS)] if several else COLORS["turn.ttfa_ms"]
            for s in drawn:
                ax.plot(
                    layout.x,
                    ys[(k, s)],
                    marker="o" if series[s][4] == "-" else "^",
                    markersize=4,
                    color=color,
                    linestyle=series[s][4],
                    linewidth=1.4,
                )
        handles = []
        if several:
            for k in range(len(layout.lines)):
                handles.append(Line2D([], [], color=LEVEL_COLORS[k % len(LEVEL_COLORS)], marker="o"))
        if len(drawn) > 1:
            for s in drawn:
                handles.append(Line2D([], [], color="#444444", linestyle=series[s][4]))
        if handles:
            fig.legend(handles, names, loc="outside lower center", ncols=ncols)
        if categorical:
            ax.set_xticks(layout.x, ticks, rotation=30 if slanted else 0, ha="right" if slanted else "center")
            ax.set_xlim(min(layout.x) - 0.5, max(layout.x) + 0.5)
        else:
            # Every plot spans every level, with a tick at each, so the plots line up whatever
            # levels a figure has values at.
            lo, hi = min(layout.x), max(layout.x)
            if layout.log:
                ax.set_xscale("log")
                ax.minorticks_off()
                ax.set_xlim(lo / 1.2, hi * 1.2)
            else:
                pad = 0.05 * (hi - lo) if hi > lo else 1.0
                ax.set_xlim(lo - pad, hi + pad)
            ax.set_xticks(layout.x, [f"{v:g}" for v in layout.x])
            if layout.descending:
                ax.invert_xaxis()
        top = max((v for values in ys.values() for v in values if not math.isnan(v)), default=0.0)
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
        other = next((n for n in ("caller", "network") if n != layout.dimension), "")
        ax.set_title(f"{title}{f', a line per {other} level' if several else ''}")
        ax.set_xlabel(level_x_label(layout))
        ax.set_ylabel(ylabel)
        return fig

    return _render(build, f"{name} by impairment level")
