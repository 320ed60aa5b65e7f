"""`uvbench run`: scenario files as measured calls under a load profile, into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uvbench.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    HeldSignals,
    UsageError,
)
from uvbench.runner.load import PACING_CALLS


def add_parser(sub) -> None:
    run = sub.add_parser(
        "run", help="run scenario files: each scenario (and matrix variant) as a measured call"
    )
    run.add_argument("path", type=Path, help="a scenario file or a folder of them")
    run.add_argument(
        "--out", type=Path, default=Path("reports"), help="folder for the run folder (default reports/)"
    )
    run.add_argument("-q", "--quiet", action="store_true", help="print only the run folder and the verdict")
    run.add_argument(
        "--open", action="store_true", help="open report.html in the web browser when the run ends"
    )
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
    load.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed the order of calls and each call's noise start and network impairment, to repeat a run",
    )
    load.add_argument(
        "--workers",
        type=int,
        default=None,
        help="pace the calls' audio in N processes, each with its own event loop (default: one per "
        f"{PACING_CALLS} calls at the load's peak, up to the cores; the run's header says how many)",
    )
    load.add_argument(
        "--step",
        default=None,
        metavar="START:STEP:MAX:HOLD",
        help="find the knee: START concurrent calls, +STEP every HOLD, up to MAX, until a threshold "
        "(or, without thresholds, any failed or invalid call) breaks, e.g. 10:10:300:30s",
    )
    run.add_argument(
        "--record",
        choices=("all", "failed", "none"),
        default=None,
        help="which calls keep their recordings (stereo FLAC, and the server's own): overrides every "
        "scenario's client.record",
    )
    run.add_argument(
        "--progress-interval",
        default="10s",
        metavar="DURATION",
        help="when stdout is not a terminal (a CI log), print a progress line this often "
        "(default 10s; 0 never; on a terminal the live table shows it)",
    )
    run.add_argument(
        "--give-up-after",
        default="30s",
        metavar="DURATION",
        help="stop the run when every call at a target has failed to be created for this long "
        "(unreachable, refused), e.g. 2m; 0 never gives up (default 30s; creates back off meanwhile)",
    )
    run.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="'METRIC: EXPR'",
        help="a k6-style gate, e.g. 'turn.ttfa_ms: p(95) < 1200' or 'call.success_pct: > 99'; repeatable",
    )
    run.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="compare with an earlier run folder as `uvbench compare` does; exit 1 when this run regressed",
    )
    run.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    held = HeldSignals()  # from the calls' end to the closing line (see HeldSignals)
    try:
        return _run(args, held)
    finally:
        held.release()


def _run(args: argparse.Namespace, held: HeldSignals) -> int:
    from uvbench.report.terminal import call_summary
    from uvbench.runner.run import TargetError, run_scenarios
    from uvbench.scenario import ScenarioError
    from uvbench.scenario.plan import LoadConfigError, plan_run

    try:  # a scenario file, a folder of them or a suite file; the files' load: with the flags applied
        plan = plan_run(args.path, _cli_load(args), repeat=args.repeat)
    except ScenarioError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    except LoadConfigError as exc:
        raise UsageError(str(exc)) from None
    give_up_after_s = _give_up_after(args.give_up_after)
    scenarios = plan.scenarios
    if not scenarios:
        raise UsageError(f"{args.path}: no scenario files (*.yaml) found there")
    baseline = None
    if args.baseline is not None:  # read before any call: a folder that is not a run folder is exit 2
        from uvbench.cli.compare import load_run

        baseline = load_run(args.baseline)

    from uvbench.report.live import LiveView
    from uvbench.runner.fanout import RunState

    name = plan.name
    stepper = _stepper(args)  # step mode: the stepper sets the concurrency, not a profile
    if plan.suite and (stepper or (args.workers or 1) > 1):
        raise UsageError("--step and --workers drive one load; a suite runs its loads in one process")
    workers, processes_line = _processes(args, plan, stepper)
    profile = plan.profile
    total = plan.total_calls
    if stepper:
        total = None
    duration = stepper.plan.total_s if stepper else plan.duration_s
    state = RunState()
    view = LiveView(
        state,
        total_calls=total,
        duration_s=duration,
        enabled=not args.quiet,
        progress_every_s=_progress_interval(args.progress_interval),
    )
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

    thresholds = plan.thresholds + _thresholds(args.threshold)  # the files' gates, then the flags'
    if stepper:
        stepper.thresholds = list(thresholds)  # each level's gate (none: no failed/invalid call)

    def on_drop(dropped: int) -> None:
        if dropped == 1:
            print(
                "uvbench: warning: a call could not start because maxVUs (--max-in-flight) calls were"
                " running; dropped calls are counted in summary.json (raise maxVUs or lower the rate)",
                file=sys.stderr,
            )

    for note in plan.notes:
        print(f"uvbench: note: {note}", file=sys.stderr)
    if not args.quiet:
        if not stepper:
            print("\n".join(plan.header()))  # the expanded load: of each load, as summary.json's `load`
        print(processes_line)
        print(_recordings_line(args.record, scenarios))
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
                workers=workers,
                step=stepper,
                record=args.record,
                on_worker_failed=lambda line: print(f"uvbench: {line}", file=sys.stderr),
                groups=plan.groups if plan.suite else None,
                scenario_tags=plan.scenario_tags,
                give_up_after_s=give_up_after_s,
                on_calls_over=held.hold,
            )
    except TargetError as exc:
        raise UsageError(str(exc)) from None
    from uvbench.report.finish import finish_run

    if stepper:  # thresholds judged each level; they are not a gate over the whole run
        extra = {"knee": stepper.knee(interrupted=summary.interrupted)}
        thresholds = []
    else:
        extra = {"load": plan.load_json}
    finished = finish_run(summary.folder, summary.records, thresholds, extra)
    for line in finished.lines:
        print(line)
    passed = sum(1 for r in summary.records if r["passed"])
    code = summary.exit_code
    if stepper:
        print(stepper.summary(interrupted=summary.interrupted))
        if code != 3:  # failed calls at the level that broke are the finding, not a failure
            code = 0 if stepper.held else EXIT_FAILED
    if code == 0 and not finished.thresholds_passed:
        code = EXIT_FAILED
    if baseline is not None and not summary.interrupted:
        from uvbench.cli.compare import baseline_check

        comparison, lines = baseline_check(
            args.baseline, baseline, summary.folder, summary.records, quiet=args.quiet
        )
        print("\n".join(lines))
        if code == 0 and comparison.verdict == "regressed":
            code = EXIT_FAILED
    _show_report(summary.folder, open_it=args.open)
    if summary.interrupted:
        done = f"{passed}/{len(summary.records)} finished calls completed"
        by = " by SIGTERM" if summary.stopped_by == "SIGTERM" else ""
        print(f"run interrupted{by}: {done}; results in {summary.folder}/")
        return EXIT_TERMINATED if summary.stopped_by == "SIGTERM" else EXIT_INTERRUPTED
    if summary.gave_up:
        sys.stdout.flush()  # the line comes before the verdict, in a terminal and in a CI log alike
        print(f"uvbench: error: {summary.gave_up}", file=sys.stderr)
    verdict = {0: "passed", 1: "FAILED", 3: "could not be carried out"}[code]
    print(f"run {verdict}: {passed}/{len(summary.records)} calls completed; results in {summary.folder}/")
    return code


MIN_PROGRESS_INTERVAL_S = 1.0


def _progress_interval(text: str) -> float | None:
    return _duration_or_never("--progress-interval", text, MIN_PROGRESS_INTERVAL_S, "10s or 1m", "prints one")


def _give_up_after(text: str) -> float | None:
    return _duration_or_never("--give-up-after", text, 0.0, "30s or 2m", "gives up")


def _duration_or_never(flag: str, text: str, minimum_s: float, examples: str, never: str) -> float | None:
    """A duration flag where 0 means never (None); UsageError naming the flag and its floor."""
    from uvbench.scenario import duration_seconds

    if text.strip() in ("0", "0s"):
        return None
    try:
        seconds = duration_seconds(text)
    except ValueError:
        seconds = -1.0
    if seconds < minimum_s or seconds <= 0:
        floor = f"a duration of at least {minimum_s:g}s" if minimum_s else "a duration"
        raise UsageError(f"{flag} {text!r} is not {floor} (expected e.g. {examples}; 0 never {never})")
    return seconds


def _show_report(folder: Path, *, open_it: bool) -> None:
    page = folder / "report.html"
    if not page.is_file():
        return
    print(f"report: {page}")
    if not open_it:
        return
    import os
    import webbrowser

    # On Linux with no display only text browsers are found, which would take over the terminal
    # and cannot show plots or play audio: say where the page is instead.
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if headless or not webbrowser.open(page.resolve().as_uri()):
        print("uvbench: no graphical web browser here; open the report above on a machine with one")


def _processes(args: argparse.Namespace, plan, stepper) -> tuple[int, str]:
    """How many pacing processes, and the header line that says so (and why)."""
    import os

    from uvbench.runner.load import pacing_processes
    from uvbench.runner.workers import analysis_processes

    if plan.suite:
        workers, why = 1, "a suite's loads run in one"
    elif args.workers is not None:
        workers, why = args.workers, "--workers"
    else:
        peak = stepper.plan.max if stepper else plan.profile.peak_calls
        local = any(s.target.is_local for s in plan.scenarios)
        workers = pacing_processes(peak, os.cpu_count(), local_server=local)
        cores = f"{os.cpu_count()} cores{' and a local server' if local else ''}"
        if peak is None:
            why = f"the load's peak is not known: give --workers N beyond about {PACING_CALLS} calls"
        else:
            why = f"{peak} call{'s' if peak != 1 else ''} at most, about {PACING_CALLS} per process, {cores}"
    analysis = analysis_processes(workers)
    return workers, (f"processes: {workers} pacing ({why}), {analysis} analysis")


def _recordings_line(override: str | None, scenarios: list) -> str:
    policies = {override} if override else {s.client.record for s in scenarios}
    said = {"all": "every call", "failed": "calls that do not complete", "none": "no call"}
    kept = "; ".join(said[p] for p in sorted(policies))
    where = "" if policies == {"none"} else " (stereo FLAC in calls/, and the server's own when it made one)"
    return f"recordings: {kept}{where}"


def _stepper(args: argparse.Namespace):
    from uvbench.runner.step import StepError, Stepper, StepPlan

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.step is None:
        return None
    clashes = [
        flag
        for flag, value in (
            ("--vus", args.concurrency),
            ("--duration", args.duration),
            ("--iterations", args.iterations),
            ("--stage", args.stage),
            ("--arrival-rate", args.arrival_rate),
            ("--max-in-flight", args.max_in_flight),
        )
        if value is not None
    ]
    if clashes:
        raise UsageError(f"--step sets the concurrency itself; drop {', '.join(clashes)}")
    try:
        return Stepper(StepPlan.parse(args.step))
    except StepError as exc:
        raise UsageError(str(exc)) from None


def _thresholds(texts: list[str]):
    from uvbench.metrics.thresholds import ThresholdError, parse_threshold_flags

    try:
        return parse_threshold_flags(texts)
    except ThresholdError as exc:
        raise UsageError("; ".join(exc.problems)) from None


def _cli_load(args: argparse.Namespace):
    """The load flags as given (k6's CLI tier: they override the file's load, see load_config)."""
    from uvbench.runner.load import LoadError, parse_stages
    from uvbench.scenario import duration_seconds
    from uvbench.scenario.load_config import CliLoad

    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {args.repeat}")
    try:
        duration = None if args.duration is None else duration_seconds(args.duration)
    except ValueError:
        raise UsageError(f"--duration {args.duration!r} is not a duration (expected e.g. 60s, 5m)") from None
    try:
        stages = parse_stages(args.stage) if args.stage is not None else None
    except LoadError as exc:
        raise UsageError(str(exc)) from None
    return CliLoad(
        vus=args.concurrency,
        duration=duration,
        iterations=args.iterations,
        stages=None if stages is None else tuple((s.duration_s, s.target) for s in stages),
        arrival_rate=args.arrival_rate,
        max_in_flight=args.max_in_flight,
    )
