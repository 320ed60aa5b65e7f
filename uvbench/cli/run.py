"""`uvbench run`: scenario files as measured calls under a load profile, into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uvbench.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, UsageError


def add_parser(sub) -> None:
    run = sub.add_parser(
        "run", help="run scenario files: each scenario (and matrix variant) as a measured call"
    )
    run.add_argument("path", type=Path, help="a scenario file or a folder of them")
    run.add_argument(
        "--out", type=Path, default=Path("reports"), help="folder for the run folder (default reports/)"
    )
    run.add_argument("-q", "--quiet", action="store_true", help="print only the run folder and the verdict")
    load = run.add_argument_group("load (k6 vocabulary: a VU is a call slot, an iteration a call)")
    load.add_argument(
        "--vus",
        "--concurrency",
        dest="concurrency",
        type=int,
        default=None,
        help="calls in flight at once (closed model)",
    )
    load.add_argument("--duration", default=None, help="keep starting calls for this long, e.g. 60s or 5m")
    load.add_argument("--iterations", type=int, default=None, help="stop after this many calls")
    load.add_argument("--stage", default=None, help="ramping concurrency, e.g. 30s:20,1m:20,30s:0")
    load.add_argument("--arrival-rate", type=float, default=None, help="open model: calls started per second")
    load.add_argument("--max-in-flight", type=int, default=None, help="open model: cap on calls at once")
    load.add_argument("--repeat", type=int, default=1, help="run each scenario this many times")
    load.add_argument("--seed", type=int, default=None, help="seed the order of calls, to repeat a run")
    run.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="'METRIC: EXPR'",
        help="a k6-style gate, e.g. 'turn.ttfa_ms: p(95) < 1200' or 'call.success_pct: > 99'; repeatable",
    )
    run.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from uvbench.report.terminal import call_summary
    from uvbench.runner.run import TargetError, run_scenarios
    from uvbench.scenario import ScenarioError, load_scenarios

    try:
        scenarios = load_scenarios(args.path)
    except ScenarioError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    if not scenarios:
        raise UsageError(f"{args.path}: no scenario files (*.yaml) found there")

    from uvbench.report.live import LiveView
    from uvbench.runner.fanout import RunState

    name = scenarios[0].base_name if len({s.base_name for s in scenarios}) == 1 else args.path.stem
    profile = _load_profile(args)
    total = profile.iterations or (None if profile.total_duration_s else len(scenarios) * args.repeat)
    state = RunState()
    view = LiveView(state, total_calls=total, duration_s=profile.total_duration_s, enabled=not args.quiet)
    # A few calls: each one's summary. A load run: only the calls that did not complete, briefly.
    detailed = total is not None and total <= 5

    def on_call(record: dict, folder: Path) -> None:
        if args.quiet:
            return
        if detailed:
            view.print(call_summary(record, str(folder)))
        elif not record["passed"]:
            call = f"{record['scenario']} call {record.get('call_id')}"
            view.print(f"{call}: {record['outcome']}: {record['outcome_detail']}")

    thresholds = _thresholds(args.threshold)

    def on_drop(dropped: int) -> None:
        if dropped == 1:
            print(
                "uvbench: warning: a call could not start because --max-in-flight calls were running; "
                "dropped calls are counted in summary.json (raise --max-in-flight or lower --arrival-rate)",
                file=sys.stderr,
            )

    try:
        with view:
            summary = run_scenarios(
                scenarios,
                args.out,
                name,
                profile=profile,
                repeat=args.repeat,
                seed=args.seed,
                on_call=on_call,
                on_drop=on_drop,
                state=state,
            )
    except TargetError as exc:
        raise UsageError(str(exc)) from None
    from uvbench.report.finish import finish_run

    finished = finish_run(summary.folder, summary.records, thresholds)
    for line in finished.lines:
        print(line)
    passed = sum(1 for r in summary.records if r["passed"])
    code = summary.exit_code
    if code == 0 and not finished.thresholds_passed:
        code = EXIT_FAILED
    if summary.interrupted:
        done = f"{passed}/{len(summary.records)} finished calls completed"
        print(f"run interrupted: {done}; results in {summary.folder}/")
        return EXIT_INTERRUPTED
    verdict = {0: "passed", 1: "FAILED", 3: "could not be carried out"}[code]
    print(f"run {verdict}: {passed}/{len(summary.records)} calls completed; results in {summary.folder}/")
    return code


def _thresholds(texts: list[str]):
    from uvbench.metrics.thresholds import ThresholdError, parse_thresholds

    mapping: dict[str, list[str]] = {}
    for text in texts:
        metric, sep, expression = text.partition(":")
        if not sep or not expression.strip():
            raise UsageError(
                f"--threshold {text!r}: expected 'METRIC: EXPRESSION', e.g. 'turn.ttfa_ms: p(95) < 1200'"
            )
        mapping.setdefault(metric.strip(), []).append(expression.strip())
    try:
        return parse_thresholds(mapping)
    except ThresholdError as exc:
        raise UsageError("; ".join(exc.problems)) from None


def _load_profile(args: argparse.Namespace):
    from uvbench.runner.load import LoadError, LoadProfile, parse_stages
    from uvbench.scenario import duration_seconds

    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {args.repeat}")
    try:
        duration = None if args.duration is None else duration_seconds(args.duration)
    except ValueError:
        raise UsageError(f"--duration {args.duration!r} is not a duration (expected e.g. 60s, 5m)") from None
    try:
        return LoadProfile(
            concurrency=args.concurrency or 1,
            duration_s=duration,
            iterations=args.iterations,
            stages=parse_stages(args.stage) if args.stage else (),
            arrival_rate=args.arrival_rate,
            max_in_flight=args.max_in_flight,
        )
    except LoadError as exc:
        raise UsageError(str(exc)) from None
