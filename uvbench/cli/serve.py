"""`uvbench serve`: the local Ultravox-compatible server with a simulated agent."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
from pathlib import Path
from typing import Any

import yaml

from uvbench import lifeline
from uvbench.cli.common import API_KEY_ENV, EXIT_OK, UsageError, fast_event_loop_factory


def add_parser(sub) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the local Ultravox-compatible server with a simulated agent",
        description="The local Ultravox-compatible server: the call REST API and each call's websocket "
        "on one port, with a simulated agent. --agent sink swaps the agent for one that costs the "
        "server almost nothing per input frame, to benchmark how many calls one client process "
        "carries: it counts the audio it is sent without reading it, answers pings, says a canned "
        "greeting and then a canned reply every agent.reply_every_s seconds (config; default 5, 0 = "
        "never), each utterance in one write; no VAD, turns, pacing, recording or faults. "
        "agent.read_batch_ms (e.g. 100) lets it read each connection that often only, which more "
        "than halves its cost per frame. Per call: experimentalSettings.uvbench.agent.mode: sink.",
    )
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
        "--agent",
        choices=("simulated", "sink"),
        default=None,
        help="simulated (default): the conversational agent; sink: the near-zero-cost agent for client "
        "capacity benchmarks (agent.mode in the config)",
    )
    serve.add_argument(
        "--keep-calls",
        type=int,
        default=None,
        metavar="N",
        help="ended calls kept for reading back, the oldest ended forgotten first (default 1000)",
    )
    serve.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop implementation (auto: uvloop where installed)",
    )
    serve.set_defaults(handler=main)


def _server_config(args: argparse.Namespace):
    from uvbench.server.config import (
        ConfigError,
        agent_from_dict,
        keep_calls_value,
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
        if not 0 <= changes["port"] <= 65535:
            raise UsageError(f"--port {changes['port']} is not a TCP port (0-65535; 0 picks a free one)")
        key = args.api_key or os.environ.get(API_KEY_ENV)
        if key:
            changes["api_key"] = key
        if args.plan is not None:
            changes["plan"] = plan_from_value(args.plan, "--plan")
        if args.latency_ms is not None:
            changes["agent"] = agent_from_dict(
                {"latency": {"ms": args.latency_ms}}, base=config.agent, where="--latency-ms"
            )
        if args.keep_calls is not None:
            changes["keep_calls"] = keep_calls_value(args.keep_calls, "--keep-calls")
        if args.agent is not None:
            base = changes.get("agent", config.agent)
            changes["agent"] = agent_from_dict({"mode": args.agent}, base=base, where="--agent")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    return dataclasses.replace(config, **changes)


def main(args: argparse.Namespace) -> int:
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
        print(f"  agent:    {config.agent.mode}", flush=True)
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
        parent = lifeline.expected_parent()
        if parent is not None:  # started by uvbench (run, locust, a bench): end with it
            lifeline.signal_on_parent_death(signal.SIGTERM)
            watcher = loop.create_task(lifeline.watch_parent(parent, stop.set))
        await stop.wait()
        if parent is not None:
            watcher.cancel()
        print("uvbench local server: stopping", flush=True)
        await server.stop()

    factory = None if args.event_loop == "asyncio" else fast_event_loop_factory()
    if args.event_loop == "uvloop" and factory is None:
        raise UsageError("--event-loop uvloop: uvloop is not installed here (pip install uvloop)")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())
    return EXIT_OK
