"""How many concurrent 16 kHz calls the local server holds on one core with tight output pacing.

The server runs in its own process pinned to CPU 0; the load runs here, pinned to CPU 1. Each
call streams real speech and silence in 20 ms chunks, in real time, in a loop (a turn every few
seconds), and the agent answers every turn, so the server is receiving, endpointing and pacing
audio out at the same time. After each level the server's own ground truth gives the lateness of
every agent audio frame against its pacer's schedule; the capacity is the largest level whose p99
stays at or under the limit (default 5 ms).

    .venv/bin/python bench/server_capacity.py                 # levels 50,100,...,300, 30 s each
    .venv/bin/python bench/server_capacity.py --levels 100,200 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uvbench.audio.corpus import load_clip_pcm, load_manifest  # noqa: E402
from uvbench.cli import fast_event_loop_factory  # noqa: E402

RATE = 16000
CHUNK_MS = 20
SERVER_CMD = os.environ.get("UVBENCH_BENCH_SERVER", "-m uvbench").split()


def start_server(cpu: int, event_loop: str) -> tuple[subprocess.Popen, str, str]:
    env = dict(os.environ, UVBENCH_SERVER_API_KEY="benchkey.abcdefghijklmnopqrstuvwxyz012345")
    proc = subprocess.Popen(
        [
            sys.executable,
            *SERVER_CMD,
            "serve",
            "--port",
            "0",
            "--latency-ms",
            "300",
            "--event-loop",
            event_loop,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, match.group(1), env["UVBENCH_SERVER_API_KEY"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_call(
    http: httpx.AsyncClient, loop_pcm: np.ndarray, seconds: float, offset: float
) -> str | None:
    await asyncio.sleep(offset)
    body = {"medium": {"serverWebSocket": {"inputSampleRate": RATE, "outputSampleRate": RATE}}}
    response = await http.post("/api/calls", json=body)
    if response.status_code != 201:
        return None
    call = response.json()
    chunk = RATE * CHUNK_MS // 1000
    frames = [loop_pcm[i : i + chunk].tobytes() for i in range(0, loop_pcm.size - chunk + 1, chunk)]
    async with websockets.connect(call["joinUrl"], max_size=None, compression=None) as ws:

        async def drain() -> None:
            async for _ in ws:
                pass

        reader = asyncio.create_task(drain())
        t0 = time.monotonic()
        n = int(seconds * 1000 / CHUNK_MS)
        for k in range(n):
            delay = t0 + (k + 1) * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(frames[k % len(frames)])
        await ws.close()
        await reader
    return call["callId"]


async def run_level(
    base_url: str, key: str, level: int, seconds: float, ramp_s: float, loop_pcm: np.ndarray
) -> list[str]:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-API-Key": key}, timeout=30, limits=limits
    ) as http:
        # Calls arrive evenly over the ramp, as a load test's ramp-up would bring them.
        tasks = [one_call(http, loop_pcm, seconds, ramp_s * i / level) for i in range(level)]
        ids = await asyncio.gather(*tasks, return_exceptions=True)
    return [i for i in ids if isinstance(i, str)]


async def lateness(base_url: str, key: str, ids: list[str]) -> tuple[np.ndarray, int]:
    values: list[float] = []
    turns = 0
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as http:
        for call_id in ids:
            truth = (await http.get(f"/_uvbench/calls/{call_id}/ground_truth", params={"lateness": 1})).json()
            values.extend(truth["pacing"].get("lateness_ms", []))
            turns += len(truth["turns"])
    return np.array(values), turns


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="50,100,150,200,250,300")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--limit-ms", type=float, default=5.0)
    parser.add_argument(
        "--event-loop", default="uvloop", choices=("uvloop", "asyncio"), help="the server's loop"
    )
    parser.add_argument(
        "--ramp-s", type=float, default=10.0, help="seconds over which a level's calls arrive"
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    clip = load_manifest()["hello_16k.wav"]
    speech = load_clip_pcm(clip, RATE)
    loop_pcm = np.concatenate((speech, np.zeros(int(2.5 * RATE), dtype=np.int16)))
    proc, base_url, key = start_server(cpu=0, event_loop=args.event_loop)
    rows = []
    try:
        for level in [int(x) for x in args.levels.split(",")]:
            cpu0 = cpu_seconds(proc.pid)
            load0 = cpu_seconds(os.getpid())
            wall0 = time.monotonic()
            with asyncio.Runner(loop_factory=fast_event_loop_factory()) as runner:
                ids = runner.run(run_level(base_url, key, level, args.seconds, args.ramp_s, loop_pcm))
            wall = time.monotonic() - wall0
            cpu = (cpu_seconds(proc.pid) - cpu0) / wall
            load_cpu = (cpu_seconds(os.getpid()) - load0) / wall
            time.sleep(1.0)
            late, turns = asyncio.run(lateness(base_url, key, ids))
            row = {
                "calls": level,
                "completed": len(ids),
                "frames": int(late.size),
                "turns": turns,
                "p50_ms": round(float(np.percentile(late, 50)), 3) if late.size else None,
                "p99_ms": round(float(np.percentile(late, 99)), 3) if late.size else None,
                "max_ms": round(float(late.max()), 3) if late.size else None,
                "server_cpu_pct": round(100 * cpu, 1),
                "load_cpu_pct": round(100 * load_cpu, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    held = [
        r["calls"]
        for r in rows
        if r["p99_ms"] is not None and r["p99_ms"] <= args.limit_ms and r["completed"] == r["calls"]
    ]
    machine = f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    best = max(held) if held else 0
    print(f"\ncapacity: {best} concurrent calls with output pacing p99 <= {args.limit_ms} ms")
    print(f"(server on one core with the {args.event_loop} event loop, load on the other; {machine})")


if __name__ == "__main__":
    main()
