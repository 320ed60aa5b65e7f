"""The `uvbench` command line.

Exit codes: 0 ok, 1 a check failed, 2 bad input, 3 the run could not be carried out. A user's
mistake is one line on stderr (what, where, how to fix), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from uvbench import __version__

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
API_KEY_ENV = "UVBENCH_SERVER_API_KEY"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uvbench", description="Evaluate and load-test Ultravox voice agents."
    )
    parser.add_argument("--version", action="version", version=f"uvbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the local Ultravox-compatible server with a simulated agent")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8765; 0 picks a free one)")
    serve.add_argument(
        "--api-key",
        default=None,
        help=f"API key clients must send (default: ${API_KEY_ENV}, else a new development key)",
    )
    serve.add_argument(
        "--plan",
        default=None,
        help="call-creation limits: unlimited (default), free, paygo, pro, scale",
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML file with host, port, plan, agent and faults settings",
    )
    serve.add_argument("--latency-ms", type=float, default=None, help="median agent response latency in ms")
    serve.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop implementation (auto: uvloop where installed)",
    )

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

    report = sub.add_parser(
        "report", help="recompute every figure and report file of a run folder from its timelines"
    )
    report.add_argument("folder", type=Path, help="a run folder under reports/")

    schema = sub.add_parser("schema", help="print the JSON Schema of scenario files")
    schema.add_argument("-o", "--output", type=Path, default=None, help="write it to this file instead")

    corpus = sub.add_parser("corpus", help="make and annotate audio clips for scenarios")
    corpus_sub = corpus.add_subparsers(dest="corpus_command", required=True)
    synth = corpus_sub.add_parser(
        "synth", help="synthesize a clip and record its speech bounds in manifest.json"
    )
    synth.add_argument("text", help="what the clip says")
    synth.add_argument("-o", "--output", type=Path, required=True, help="the clip to write (.wav or .flac)")
    synth.add_argument("--rate", type=int, default=16000, help="sample rate in Hz (default 16000)")
    synth.add_argument("--wpm", type=int, default=175, help="speaking rate, words per minute")
    synth.add_argument("--voice", default="en-us", help="eSpeak NG voice (default en-us)")
    annotate = corpus_sub.add_parser(
        "annotate", help="find the speech bounds of recordings, into manifest.json"
    )
    annotate.add_argument("paths", nargs="+", type=Path, help="audio files to annotate")
    annotate.add_argument("--manifest-dir", type=Path, default=None, help="where the manifest goes")
    annotate.add_argument("--threshold-db", type=float, default=-45.0, help="speech level threshold, dBFS")

    check = sub.add_parser(
        "selfcheck", help="run one probe call against the embedded server and write a report"
    )
    check.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        help="folder for the run folder (default reports/)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "selfcheck":
            return _selfcheck(args)
        if args.command == "run":
            return _run(args)
        if args.command == "report":
            return _report(args)
        if args.command == "schema":
            return _schema(args)
        if args.command == "corpus":
            return _corpus(args)
    except UsageError as exc:
        print(f"uvbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT


# -- serve ---------------------------------------------------------------------------------------


def _server_config(args: argparse.Namespace):
    from uvbench.server.config import (
        ConfigError,
        agent_from_dict,
        plan_from_value,
        server_config_from_dict,
    )

    data: dict[str, Any] = {}
    if args.config is not None:
        try:
            text = args.config.read_text()
        except OSError as exc:
            raise UsageError(f"{args.config}: cannot read the server config ({exc.strerror})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{args.config}:{mark.line + 1}:{mark.column + 1}" if mark else str(args.config)
            raise UsageError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    try:
        config = server_config_from_dict(data, where=str(args.config or "server config"))
        changes: dict[str, Any] = {}
        if args.host is not None:
            changes["host"] = args.host
        changes["port"] = args.port if args.port is not None else (config.port or 8765)
        key = args.api_key or os.environ.get(API_KEY_ENV)
        if key:
            changes["api_key"] = key
        if args.plan is not None:
            changes["plan"] = plan_from_value(args.plan, "--plan")
        if args.latency_ms is not None:
            changes["agent"] = agent_from_dict(
                {"latency": {"ms": args.latency_ms}}, base=config.agent, where="--latency-ms"
            )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    import dataclasses

    return dataclasses.replace(config, **changes)


def _serve(args: argparse.Namespace) -> int:
    from uvbench.server import LocalServer

    config = _server_config(args)

    async def run() -> None:
        server = LocalServer(config)
        server.prepare()
        try:
            await server.start()
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {config.host}:{config.port} ({exc.strerror}); pick another --port"
            ) from None
        print(f"uvbench local server listening on {server.base_url}", flush=True)
        print(f"  API key:  {server.api_key}", flush=True)
        print(f"  plan:     {config.plan.name}", flush=True)
        body = '{"medium": {"serverWebSocket": {"inputSampleRate": 16000}}}'
        print(
            f"  try:      curl -s -X POST {server.api_url}/calls -H 'X-API-Key: {server.api_key}' "
            f"-H 'Content-Type: application/json' -d '{body}'",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("uvbench local server: stopping", flush=True)
        await server.stop()

    factory = None if args.event_loop == "asyncio" else fast_event_loop_factory()
    if args.event_loop == "uvloop" and factory is None:
        raise UsageError("--event-loop uvloop: uvloop is not installed here (pip install uvloop)")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())
    return EXIT_OK


def fast_event_loop_factory():
    """uvloop's event loop where it is installed (not on Windows), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# -- run ------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
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


def _report(args: argparse.Namespace) -> int:
    from uvbench.report.finish import finish_run
    from uvbench.report.rebuild import rebuild

    if not (args.folder / "calls").is_dir():
        raise UsageError(
            f"{args.folder}: not a run folder (it has no calls/ folder); pass reports/<time>-<name>/"
        )
    result = rebuild(args.folder)
    for warning in result.warnings:
        print(f"uvbench: warning: {warning}", file=sys.stderr)
    for line in finish_run(args.folder, result.records, []).lines:
        print(line)
    print(f"report rebuilt from {len(result.records)} call timelines in {args.folder}/")
    return EXIT_OK


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


# -- schema and corpus ---------------------------------------------------------------------------


def _schema(args: argparse.Namespace) -> int:
    from uvbench.scenario import json_schema

    text = json.dumps(json_schema(), indent=2)
    if args.output is None:
        print(text)
    else:
        try:
            args.output.write_text(text + "\n")
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write the schema ({exc.strerror})") from None
    return EXIT_OK


def _corpus(args: argparse.Namespace) -> int:
    from uvbench.audio.corpus_commands import CorpusError, annotate, synth
    from uvbench.audio.source import AudioFileError

    try:
        if args.corpus_command == "synth":
            clip = synth(args.text, args.output, sample_rate=args.rate, wpm=args.wpm, voice=args.voice)
            bounds = f"speech {clip.speech_start_s:.3f}-{clip.speech_end_s:.3f} s"
            print(f"{args.output}: {clip.duration_s:.2f} s, {bounds}")
        else:
            for clip in annotate(args.paths, manifest_dir=args.manifest_dir, threshold_db=args.threshold_db):
                print(f"{clip.file}: speech {clip.speech_start_s:.3f}-{clip.speech_end_s:.3f} s")
    except (CorpusError, AudioFileError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


# -- selfcheck -----------------------------------------------------------------------------------


def _selfcheck(args: argparse.Namespace) -> int:
    from uvbench.server import LocalServer, ServerConfig
    from uvbench.server.probe import run_probe

    async def run() -> tuple[dict[str, Any], bytes | None]:
        async with LocalServer(ServerConfig()) as server:
            result = await run_probe(server.base_url, server.api_key)
        return {
            "summary": result.summary(),
            "call": result.call,
            "groundTruth": result.truth,
        }, result.recording

    try:
        report, recording = asyncio.run(run())
    except Exception as exc:  # the run could not be carried out: say why in one line
        print(f"uvbench: selfcheck could not run: {exc}", file=sys.stderr)
        return EXIT_NOT_RUN
    folder = args.out / f"{dt.datetime.now():%Y%m%d-%H%M%S}-selfcheck"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "selfcheck.json").write_text(json.dumps(report, indent=2))
    if recording:
        (folder / "server_recording.wav").write_bytes(recording)
    s = report["summary"]
    ok = (
        s["audioFramesReceived"] > 0
        and s["clearAfterBargeInMs"] is not None
        and s["turnFirstAudioMs"] is not None
    )
    print(f"selfcheck {'passed' if ok else 'FAILED'}: call {s['callId']}")
    print(f"  create {s['createMs']} ms, greeting first audio {s['greetingFirstAudioMs']} ms after join")
    print(f"  turn: first agent audio {s['turnFirstAudioMs']} ms after the end of the user's speech")
    print(f"  barge-in: playback_clear_buffer {s['clearAfterBargeInMs']} ms after the interruption began")
    print(f"  end reason {s['endReason']}; report in {folder}/")
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
