"""`uvbench report DIR`: recompute a run folder's figures and report files from its timelines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uvbench.cli.common import EXIT_OK, UsageError


def add_parser(sub) -> None:
    report = sub.add_parser(
        "report", help="recompute every figure and report file of a run folder from its timelines"
    )
    report.add_argument("folder", type=Path, help="a run folder under reports/")
    report.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="processes recomputing the calls (default: one per core)",
    )
    report.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from uvbench.report.finish import finish_run
    from uvbench.report.rebuild import gc_paused, rebuild

    if not (args.folder / "calls").is_dir():
        raise UsageError(
            f"{args.folder}: not a run folder (it has no calls/ folder); pass reports/<time>-<name>/"
        )

    def warm_page() -> None:  # while other processes recompute the calls
        from uvbench.report import plots

        plots.warm()

    with gc_paused():
        # finish_run writes the tables, with the page; it reads nothing of the records left out
        result = rebuild(
            args.folder, jobs=args.jobs, reports=False, light=True, tables=True, meanwhile=warm_page
        )
        for warning in result.warnings:
            print(f"uvbench: warning: {warning}", file=sys.stderr)
        lines = finish_run(args.folder, result.records, [], tables=result.tables).lines
    for line in lines:
        print(line)
    print(f"report rebuilt from {len(result.records)} call timelines in {args.folder}/")
    return EXIT_OK
