"""`uvbench selfcheck`: one probe call against the embedded server, with a report."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from uvbench.cli.common import EXIT_FAILED, EXIT_NOT_RUN, EXIT_OK


def add_parser(sub) -> None:
    check = sub.add_parser(
        "selfcheck", help="run one probe call against the embedded server and write a report"
    )
    check.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        help="folder for the run folder (default reports/)",
    )
    check.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
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
