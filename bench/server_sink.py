"""The local server's CPU time per input frame: the sink agent against the simulated agent.

For each agent mode a `uvbench serve --agent MODE` process (uvloop, pinned to CPU 0) takes N
calls at 16 kHz; this process (pinned to CPU 1) joins them all, then sends every call a 20 ms
frame of silence every 20 ms for the hold (which starts once the joins and greetings are over),
from one timer loop over all sockets (uvbench's own
websocket client, so the load costs little). The server's CPU time (utime + stime from /proc)
over the hold, divided by the frames sent in it, is the figure; the server's own ground truth
must have counted every frame. The simulated agent hears silence only, so it never replies;
the sink speaks its canned reply every 5 s (its default; --reply-every-s), which its figure
includes.

    .venv/bin/python bench/server_sink.py                        # 200 calls, 10 s, both modes
    .venv/bin/python bench/server_sink.py --calls 1000 --modes sink
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
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from uvbench.call.wsclient import CallSocket  # noqa: E402
from uvbench.eventloop import fast_event_loop_factory  # noqa: E402

RATE, CHUNK_MS = 16000, 20
FRAME = bytes(2 * RATE * CHUNK_MS // 1000)
KEY = "benchkey.abcdefghijklmnopqrstuvwxyz012345"


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def start_server(mode: str, cpu: int | None, agent: dict, folder: str) -> tuple[subprocess.Popen, str]:
    config = Path(folder) / "server.yaml"
    config.write_text(json.dumps({"agent": {"mode": mode, **agent}}))  # JSON is YAML
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvbench", "serve", "--port", "0", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, UVBENCH_SERVER_API_KEY=KEY),
        preexec_fn=None if cpu is None else lambda: os.sched_setaffinity(0, {cpu}),
    )
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, match.group(1)


async def level(base_url: str, pid: int, calls: int, hold_s: float, settle_s: float) -> dict:
    received = [0]

    def on_binary(frame: bytes, t_ns: int) -> None:
        received[0] += 1

    def on_text(frame: str, t_ns: int) -> None:
        pass

    body = {"medium": {"serverWebSocket": {"inputSampleRate": RATE}}}
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": KEY}, limits=limits) as http:
        created = await asyncio.gather(*(http.post("/api/calls", json=body) for _ in range(calls)))
        ids = [r.json()["callId"] for r in created]
        sockets = []
        for r in created:
            ws = await CallSocket.connect(r.json()["joinUrl"])
            ws.start(on_binary, on_text)
            sockets.append(ws)
        await asyncio.sleep(settle_s)  # joins and greetings are not the figure
        loop = asyncio.get_running_loop()
        ticks = round(hold_s * 1000 / CHUNK_MS)
        cpu0, client0, t0 = cpu_times(pid), time.process_time(), loop.time()
        late_ticks = 0
        for k in range(ticks):
            delay = t0 + k * CHUNK_MS / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -CHUNK_MS / 1000:
                late_ticks += 1
            for ws in sockets:
                ws.send_binary(FRAME)
        await asyncio.sleep(0.3)  # the server reads what is still in flight
        cpu1, client1, t1 = cpu_times(pid), time.process_time(), loop.time()
        await asyncio.gather(*(ws.close() for ws in sockets))
        truths = await asyncio.gather(*(http.get(f"/_uvbench/calls/{i}/ground_truth") for i in ids))
    counted = sum(t.json()["input"]["frames_received"] for t in truths)
    sent = ticks * calls
    user_s, system_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    server_s = user_s + system_s
    return {
        "calls": calls,
        "frames_sent": sent,
        "frames_counted_by_server": counted,
        "server_cpu_s": round(server_s, 2),
        "server_cpu_pct": round(100 * server_s / (t1 - t0), 1),
        "server_us_per_frame": round(1e6 * server_s / sent, 2),
        "of_which_kernel_us": round(1e6 * system_s / sent, 2),
        "client_cpu_pct": round(100 * (client1 - client0) / (t1 - t0), 1),
        "client_late_ticks": late_ticks,
        "agent_frames_received": received[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="the hold over which CPU is measured")
    parser.add_argument("--modes", default="sink,simulated")
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds between the joins and the hold (default: 5 for the simulated agent, whose "
        "greeting, 0.35 s latency then 3.6 s paced in real time, is over by then; 1 for the sink)",
    )
    parser.add_argument(
        "--reply-every-s", type=float, default=5.0, help="the sink's canned reply period (0 = none)"
    )
    parser.add_argument(
        "--read-batch-ms", type=float, default=0.0, help="the sink's agent.read_batch_ms (0 = off)"
    )
    parser.add_argument("--no-pin", action="store_true", help="let the kernel place both processes")
    args = parser.parse_args()
    if not args.no_pin:
        os.sched_setaffinity(0, {1})
    for mode in args.modes.split(","):
        sink = {"reply_every_s": args.reply_every_s, "read_batch_ms": args.read_batch_ms}
        with tempfile.TemporaryDirectory() as folder:
            proc, url = start_server(mode, None if args.no_pin else 0, sink if mode == "sink" else {}, folder)
        try:
            with asyncio.Runner(loop_factory=fast_event_loop_factory()) as runner:
                settle = args.settle if args.settle is not None else (1.0 if mode == "sink" else 5.0)
                result = runner.run(level(url, proc.pid, args.calls, args.seconds, settle))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        print(json.dumps({"agent": mode, **(sink if mode == "sink" else {}), **result}), flush=True)
    print(
        f"({args.calls} calls x {args.seconds:.0f} s of 16 kHz / 20 ms frames; {cpu_model()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()})"
    )


if __name__ == "__main__":
    main()
