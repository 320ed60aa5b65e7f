"""`uvbench history`: one figure across past runs, newest last, with a text sparkline.

Reads the run history `uvbench run` keeps in `reports/history.sqlite` (`uvbench.report.history`).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from uvbench.cli.common import EXIT_OK, UsageError

SPARKS = "▁▂▃▄▅▆▇█"


def add_parser(sub) -> None:
    history = sub.add_parser("history", help="one figure across past runs (reports/history.sqlite)")
    history.add_argument(
        "--db", type=Path, default=Path("reports") / "history.sqlite", help="default reports/history.sqlite"
    )
    history.add_argument("--name", default=None, help="only the runs of this name")
    history.add_argument("--metric", default="turn.ttfa_ms", help="default turn.ttfa_ms")
    history.add_argument(
        "--stat",
        default="p95",
        help="p50, p95, p99, mean or count (rates have only their value); default p95",
    )
    history.add_argument("--scenario", default=None, help="that scenario's figure instead of the run's")
    history.add_argument("--last", type=int, default=20, help="how many runs, the newest (default 20)")
    history.add_argument("--json", action="store_true", help="print the points as JSON")
    history.set_defaults(handler=main)


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled between the smallest and the largest."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARKS[len(SPARKS) // 2 - 1] * len(values)
    return "".join(SPARKS[round((v - lo) / (hi - lo) * (len(SPARKS) - 1))] for v in values)


def _unit(metric: str) -> str:
    if metric.endswith("_ms"):
        return "ms"
    if metric.endswith("_pct"):
        return "%"
    if metric.endswith("_per_min"):
        return "/min"
    return ""


def main(args: argparse.Namespace) -> int:
    from uvbench.report.compare import format_value
    from uvbench.report.history import (
        RATE_METRICS,
        HistoryError,
        history_points,
        known_metrics,
        known_stats,
        run_names,
    )

    if args.last < 1:
        raise UsageError(f"--last must be at least 1, got {args.last}")
    if args.db.exists() and not args.db.is_file():
        raise UsageError(
            f"--db {args.db} is not a file: name the history database (e.g. reports/history.sqlite)"
        )
    if not args.db.is_file():
        message = f"no history yet at {args.db}: run `uvbench run` first"
        if args.json:
            print(message, file=sys.stderr)
            print("[]")
        else:
            print(message)
        return EXIT_OK
    stat = "value" if args.metric in RATE_METRICS else args.stat
    try:
        metrics = known_metrics(args.db)
        if args.metric not in metrics:
            close = difflib.get_close_matches(args.metric, metrics, n=3) or metrics[:8]
            raise UsageError(f"{args.db}: no figures of {args.metric!r} (did you mean: {', '.join(close)}?)")
        stats = known_stats(args.db, args.metric)
        if stat not in stats:
            raise UsageError(f"--stat {stat}: {args.metric} has {', '.join(stats)}")
        if args.name is not None and args.name not in (names := run_names(args.db)):
            raise UsageError(f"{args.db}: no runs named {args.name!r} (names: {', '.join(names[:10])})")
        points = history_points(args.db, args.name, args.metric, stat, args.last, scenario=args.scenario)
    except HistoryError as exc:
        raise UsageError(str(exc)) from None
    key = f"{args.metric}.{stat}"
    if args.json:
        print(json.dumps(points, indent=2))
        return EXIT_OK
    if not points:
        where = f" of scenario {args.scenario}" if args.scenario else ""
        print(f"no runs{where} have {key} in {args.db}")
        return EXIT_OK
    unit = _unit(args.metric)
    values = [p["metrics"][key] for p in points]
    who = f" of {args.name}" if args.name else ""
    scope = f" [{args.scenario}]" if args.scenario else ""
    print(f"{args.metric} {stat}{scope}: the last {len(points)} runs{who}, newest last")
    width = max(len(p["run"]) for p in points) + 2
    print(f"  {'run':<{width}}{'started':<21}{'value':>11}{'change':>11}  trend")
    previous = None
    line = sparkline(values)
    for point, value, spark in zip(points, values, line, strict=True):
        change = "—" if previous is None else format_value(value - previous, unit, signed=True)
        started = point["started"].replace("T", " ")
        print(f"  {point['run']:<{width}}{started:<21}{format_value(value, unit):>11}{change:>11}  {spark}")
        previous = value
    print(f"trend {line}  (min {format_value(min(values), unit)}, max {format_value(max(values), unit)})")
    return EXIT_OK
