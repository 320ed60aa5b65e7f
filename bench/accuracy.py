"""How far uvbench's client-side figures are from the local server's ground truth.

Runs a scenario (a greeting, a spoken turn, a barge-in) against the local server in its own
process, several calls at once, and for every call holds each client figure's end point against
what the server recorded on the same CLOCK_MONOTONIC:

- turn.ttfb_ms end point: first reply frame arrival vs the server's first byte of the reply
- turn.ttfa_ms end point: first sound heard vs first byte + the reply's first audible sample / rate
- interrupt.clear_ms end point: playback_clear_buffer arrival vs the server's send time
- turn.thinking_ms end point: `state: thinking` arrival vs the server's end-of-turn decision

Reported per figure: median and p99 of the absolute error, in ms.

    .venv/bin/python bench/accuracy.py                  # 20 calls, 5 at a time, both buffer sizes
    .venv/bin/python bench/accuracy.py --calls 50 --concurrency 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import textwrap
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uvbench.runner.run import Endpoint, run_call_of  # noqa: E402
from uvbench.scenario import parse_scenarios  # noqa: E402
from uvbench.server.process import ServerProcess  # noqa: E402

NS = 1_000_000_000
SCENARIO = """
    name: accuracy-{buffer}
    call:
      medium:
        serverWebSocket: {{inputSampleRate: 16000, outputSampleRate: 24000, clientBufferSizeMs: {buffer}}}
    script:
      - wait_for: agent_done
      - say: hello_16k.wav
      - wait_for: agent_audible
      - barge_in: interrupt_48k.flac
        after: 400ms
      - wait_for: agent_done
      - hang_up
"""


def errors_of(result, metrics) -> dict[str, list[float]]:
    truth = result.ground_truth
    out: dict[str, list[float]] = {"ttfb": [], "ttfa": [], "clear": [], "thinking": []}
    replies = [r for r in truth["replies"] if r["kind"] == "reply" and r["first_byte_ns"]]
    for turn, reply in zip(metrics.turns, replies, strict=False):
        if turn["first_audio_ns"]:
            out["ttfb"].append((turn["first_audio_ns"] - reply["first_byte_ns"]) / 1e6)
        if turn["first_audible_ns"] and reply["first_audible_sample"] is not None:
            heard = reply["first_byte_ns"] + reply["first_audible_sample"] * NS // 24000
            out["ttfa"].append((turn["first_audible_ns"] - heard) / 1e6)
        voice_turns = [t for t in truth["turns"] if t["kind"] == "voice"]
        if turn["thinking_ns"] and voice_turns:
            out["thinking"].append((turn["thinking_ns"] - voice_turns[0]["end_decided_ns"]) / 1e6)
    for barge, clear in zip(metrics.barge_ins, truth["clears"], strict=False):
        if barge["clear_ns"]:
            out["clear"].append((barge["clear_ns"] - clear["sent_ns"]) / 1e6)
    return out


async def run(endpoint: Endpoint, calls: int, concurrency: int, buffer: int) -> dict[str, list[float]]:
    (scenario,) = parse_scenarios(textwrap.dedent(SCENARIO.format(buffer=buffer)), base_dir=".")
    gate = asyncio.Semaphore(concurrency)
    totals: dict[str, list[float]] = {}

    async def one() -> None:
        async with gate:
            result, metrics, _, _ = await run_call_of(scenario, endpoint)
        if result.ground_truth is None:
            return
        for name, values in errors_of(result, metrics).items():
            totals.setdefault(name, []).extend(values)

    await asyncio.gather(*(one() for _ in range(calls)))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=5)
    args = parser.parse_args()
    with ServerProcess({"agent": {"latency": {"kind": "fixed", "ms": 300}}}) as server:
        endpoint = Endpoint(server.api_url, server.api_key, "local", True)
        for buffer in (60, 30000):
            totals = asyncio.run(run(endpoint, args.calls, args.concurrency, buffer))
            for name, values in totals.items():
                err = np.abs(np.array(values))
                row = {
                    "clientBufferSizeMs": buffer,
                    "figure": name,
                    "n": int(err.size),
                    "median_ms": round(float(np.median(err)), 3) if err.size else None,
                    "p99_ms": round(float(np.percentile(err, 99)), 3) if err.size else None,
                    "max_ms": round(float(err.max()), 3) if err.size else None,
                }
                print(json.dumps(row), flush=True)
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    print(f"({args.calls} calls per buffer size, {args.concurrency} at a time; {machine})")


if __name__ == "__main__":
    main()
