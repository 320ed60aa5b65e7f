"""`uvbench compare BASELINE CURRENT`: did a run regress against an earlier one? (`report/compare.py`)

Prints a table per scope (metric, baseline, current, diff, 95 % CI, verdict) and a last line with
the verdict: "regressed", "improved", "no change" or "not enough data" (no figure could be judged).
Exit codes: `EXIT_CODES`. Also the baseline step of `uvbench run --baseline DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from uvbench.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError

EXIT_NOT_ENOUGH_DATA = 4
"""`uvbench compare`: the runs have too few calls for any figure to be judged (the data cannot tell,
which is not "no change")."""
EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}  no regression: no change, or improved
  {EXIT_FAILED}  regressed: a figure is worse beyond its practical minimum
  {EXIT_BAD_INPUT}  bad input: a folder is not a run folder, an unknown --metric
  {EXIT_NOT_ENOUGH_DATA}  not enough data: no figure could be judged (a figure needs at least 10 calls
     measuring it in each run, and for p95 and p99 more values): run more calls
"""
# 10 is `uvbench.report.compare.MIN_SAMPLE`, not imported here: it would load numpy for every command.


def add_parser(sub) -> None:
    compare = sub.add_parser(
        "compare",
        help="compare a run folder against a baseline run folder: regressed, improved, no change or not "
        "enough data",
        description="Bootstrap (on calls) confidence intervals of current - baseline for p50/p95/p99\n"
        "of each latency and for the rates; 'regressed' when the whole interval is worse by\n"
        "more than the practical minimum; 'not enough data' when no figure could be judged.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("baseline", type=Path, help="the earlier run folder (reports/<time>-<name>/)")
    compare.add_argument("current", type=Path, help="the run folder to judge")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME",
        help="compare only this metric (repeatable), e.g. turn.ttfa_ms or call.success_pct",
    )
    add_rule_options(compare)
    compare.set_defaults(handler=main)


def add_rule_options(parser: argparse.ArgumentParser) -> None:
    rule = parser.add_argument_group("the rule (see `uvbench.report.compare`)")
    rule.add_argument(
        "--min-effect",
        type=_percent,
        default=None,
        metavar="PCT",
        help="practical minimum, relative to the baseline value (default 10%%)",
    )
    rule.add_argument(
        "--min-effect-ms",
        type=_non_negative,
        default=None,
        metavar="MS",
        help="the practical minimum's floor for ms metrics (default 20)",
    )
    rule.add_argument(
        "--confidence", type=_percent, default=None, metavar="PCT", help="confidence level (default 95%%)"
    )
    rule.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 2000)")
    rule.add_argument("--seed", type=int, default=None, help="the bootstrap's seed (fixed by default)")


def _percent(text: str) -> float:
    """A percentage, "5%" or "5", as a fraction (0.05)."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage (e.g. 5%)") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"{text!r} is outside 0..100%")
    return value / 100


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def settings_from(args: argparse.Namespace):
    from uvbench.report.compare import with_settings

    try:
        return with_settings(
            min_effect=getattr(args, "min_effect", None),
            min_effect_ms=getattr(args, "min_effect_ms", None),
            confidence=getattr(args, "confidence", None),
            resamples=getattr(args, "resamples", None),
            seed=getattr(args, "seed", None),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def load_run(folder: Path) -> list[dict[str, Any]]:
    """A run folder's call records (results.jsonl); UsageError (one line) when it is not a run folder.
    Lines that are not JSON objects (a run killed mid-write) are skipped with a warning."""
    results = folder / "results.jsonl"
    if not folder.is_dir() or not results.is_file():
        raise UsageError(f"{folder}: not a run folder (no results.jsonl in it); pass reports/<time>-<name>/")
    records: list[dict[str, Any]] = []
    skipped = 0
    for line in results.read_bytes().splitlines():  # bytes: a line cut mid-character is one bad line
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    if skipped:
        print(f"uvbench: warning: {results}: {skipped} lines are not call records; skipped", file=sys.stderr)
    if not records:
        raise UsageError(f"{folder}: not a run folder with calls (results.jsonl has no call records)")
    return records


def _metrics(names: list[str]) -> list[str] | None:
    from uvbench.report.compare import METRICS

    for name in names:
        if name not in METRICS:
            raise UsageError(f"--metric {name}: not a metric compare knows (known: {', '.join(METRICS)})")
    return names or None


def main(args: argparse.Namespace) -> int:
    from uvbench.report.compare import NOT_ENOUGH_DATA, REGRESSED, compare, table_lines

    settings = settings_from(args)
    metrics = _metrics(args.metric)
    baseline = load_run(args.baseline)
    current = load_run(args.current)
    comparison = compare(
        baseline,
        current,
        settings,
        metrics=metrics,
        baseline_label=str(args.baseline),
        current_label=str(args.current),
    )
    if args.json:
        print(json.dumps(comparison.to_json(), indent=2))
    else:
        print(f"baseline {args.baseline} ({len(baseline)} calls)")
        print(f"current  {args.current} ({len(current)} calls)")
        for line in table_lines(comparison):
            print(line)
    if comparison.verdict == REGRESSED:
        return EXIT_FAILED
    return EXIT_NOT_ENOUGH_DATA if comparison.verdict == NOT_ENOUGH_DATA else EXIT_OK


def baseline_check(
    baseline_dir: Path,
    baseline: list[dict[str, Any]],
    folder: Path,
    records: list[dict[str, Any]],
    *,
    quiet: bool = False,
):
    """`uvbench run --baseline`: compare the finished run with the baseline, write compare.json into
    the run folder and a "baseline comparison" testcase into its junit.xml; returns the comparison
    and the lines to print (the rows that moved, then the verdict line)."""
    from uvbench.report.compare import NOT_ENOUGH_DATA, REGRESSED, compare, format_value, table_lines
    from uvbench.report.junit import add_baseline_case

    comparison = compare(baseline, records, baseline_label=str(baseline_dir), current_label=str(folder))
    (folder / "compare.json").write_text(json.dumps(comparison.to_json(), indent=2), encoding="utf-8")
    junit = folder / "junit.xml"
    if junit.exists():
        regressed = [
            f"{'' if s.name == 'overall' else f'[{s.name}] '}{r.label} "
            + format_value(r.diff, r.unit, signed=True)
            for s, r in comparison.regressions
        ]
        detail = "\n".join(table_lines(comparison))
        junit.write_text(
            add_baseline_case(
                junit.read_text(encoding="utf-8"),
                baseline=str(baseline_dir),
                regressed=regressed,
                detail=detail,
                not_judged=comparison.summary_line() if comparison.verdict == NOT_ENOUGH_DATA else "",
            ),
            encoding="utf-8",
        )
    lines = [] if quiet else [f"BASELINE {baseline_dir}", *table_lines(comparison, only_moved=True)[:-1]]
    details = f" (details in {folder}/compare.json)" if comparison.verdict == REGRESSED else ""
    lines.append(comparison.summary_line() + details)
    return comparison, lines
