"""uvbench's pacer against a naive sleep-per-chunk sender, at the same load, in one run.

N websocket streams of 16 kHz audio in 20 ms chunks run on one event loop for a while: half
send with uvbench's pacer (absolute deadlines), half the naive way (`sleep(chunk)` then send).
They share the loop, so they suffer the same load. A sink server in its own process receives and
discards. Reported per kind: drift at the end (audio sent minus audio due), and lateness against
the real-time schedule.

    .venv/bin/python bench/pacer.py                     # 100 streams for 60 s
    .venv/bin/python bench/pacer.py --streams 200 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from multiprocessing import Process, Queue
from pathlib import Path

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uvbench.audio.pacer import Composer, Schedule, drift_ms  # noqa: E402
from uvbench.audio.sender import PacedSender  # noqa: E402

try:  # the process-wide scheduler (its stream epochs on a shared grid), where this checkout has it
    from uvbench.audio.sender import Scheduler  # noqa: E402
except ImportError:  # an older checkout, measured for comparison
    Scheduler = None
from uvbench.call.wsclient import CallSocket  # noqa: E402

RATE, CHUNK = 16000, 320
NS = 1_000_000_000


def sink(port_queue: Queue) -> None:
    os.sched_setaffinity(0, {0})

    async def discard(ws):
        async for _ in ws:
            pass

    async def main():
        async with websockets.serve(discard, "127.0.0.1", 0, compression=None, max_size=None) as server:
            port_queue.put(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


async def naive(send, stop, on_sent) -> None:
    k = 0
    while not stop.is_set():
        await asyncio.sleep(CHUNK / RATE)
        await send(bytes(2 * CHUNK))
        on_sent(k)
        k += 1


async def one_stream(url: str, kind: str, stop: asyncio.Event, out: list) -> None:
    # Paced: the socket and sender every call uses; naive: the websockets client, sleep then send.
    socket = (
        await CallSocket.connect(url) if kind == "paced" else await websockets.connect(url, compression=None)
    )
    t0 = time.monotonic_ns()
    if kind == "paced" and Scheduler is not None:  # as a call picks its epoch (call/engine.py)
        t0, _ = Scheduler.of().stream_epoch(t0, CHUNK * NS // RATE)
    schedule = Schedule(RATE, CHUNK, t0)
    lateness: list[float] = []
    sent = [0]

    def record(k: int) -> None:
        sent[0] = (k + 1) * CHUNK
        lateness.append((time.monotonic_ns() - schedule.due_ns(k)) / 1e6)

    if kind == "paced":
        socket.start(lambda *_: None, lambda *_: None)
        sender = PacedSender(schedule, Composer(CHUNK), socket, lambda due, at, a, b: record(b // CHUNK - 1))
        sender.start()
        await stop.wait()
        sender.stop()
        await sender.done
    else:
        await naive(socket.send, stop, record)
    out.append((kind, drift_ms(schedule, sent[0], time.monotonic_ns()), lateness))
    await socket.close()


async def run(url: str, streams: int, seconds: float) -> list:
    stop = asyncio.Event()
    out: list = []
    tasks = [
        asyncio.create_task(one_stream(url, "paced" if i % 2 == 0 else "naive", stop, out))
        for i in range(streams)
    ]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    ports: Queue = Queue()
    server = Process(target=sink, args=(ports,), daemon=True)
    server.start()
    url = f"ws://127.0.0.1:{ports.get(timeout=10)}"
    os.sched_setaffinity(0, {1})
    started = time.process_time()
    out = asyncio.run(run(url, args.streams, args.seconds))
    cpu = (time.process_time() - started) / args.seconds
    server.terminate()
    for kind in ("paced", "naive"):
        drifts = np.array([d for k, d, _ in out if k == kind])
        late = np.concatenate([np.array(lat) for k, _, lat in out if k == kind])
        print(
            json.dumps(
                {
                    "sender": kind,
                    "streams": len(drifts),
                    "drift_ms_median": round(float(np.median(drifts)), 1),
                    "drift_ms_worst": round(float(drifts[np.argmax(np.abs(drifts))]), 1),
                    "lateness_ms_p50": round(float(np.percentile(late, 50)), 2),
                    "lateness_ms_p99": round(float(np.percentile(late, 99)), 2),
                    "lateness_ms_max": round(float(late.max()), 2),
                }
            )
        )
    load = f"{args.streams} streams of 16 kHz / 20 ms on one core for {args.seconds:.0f} s"
    print(f"({load}, client CPU {100 * cpu:.0f} %; {platform.machine()}, Python {platform.python_version()})")


if __name__ == "__main__":
    main()
