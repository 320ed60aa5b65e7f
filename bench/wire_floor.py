"""The floor under a pacing process's CPU on this machine: the writes and wake-ups alone.

A pacing process sends one websocket frame per call per chunk (20 ms: 50 writes a call-second),
each a system call on its own socket, and wakes on a timer for every deadline some call has. This
bench does only that, with no uvbench code on the path: N loopback TCP connections to a reader
process pinned to CPU 0 (the writer on CPU 1), a 648-byte frame (a 20 ms 16 kHz chunk and its
header) written to each every 20 ms from one timerfd timer (`FineTimer`), the connections split
into groups that fall due together, as the scheduler's phases do. It prints the writer's CPU per
write and per call-second: what no Python code on top can go below here.

The reader either sleeps in epoll until data comes (`--reader wake`: each write to a sleeping
reader also pays, on the writer's CPU, for waking it) or reads every connection every 20 ms
without waiting on them (`--reader tick`: as a server on another machine, which costs the writer
nothing to wake). On loopback the receiving side's TCP processing runs on the writer's CPU too;
over a network it would not.

`--replies F` has the reader answer as an agent does: every 20 ms it writes a 20 ms audio frame
(644 bytes) to a share F of the connections (which ones turns every second), and the writer reads
each as it comes, with a no-op handler. The simulated agent of `bench/capacity.py` speaks about
40 % of the time (about 21 frames a call-second): `--replies 0.4` is the floor under that bench's
"real agent replies" figure.

    .venv/bin/python bench/wire_floor.py                               # 200 and 1000 connections
    .venv/bin/python bench/wire_floor.py --calls 200 --per-wake 5,20,200 --reader wake
    .venv/bin/python bench/wire_floor.py --calls 200 --per-wake 5 --reader wake --replies 0.4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import selectors
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from uvbench.audio.timer import FineTimer  # noqa: E402

FRAME = b"\x82\xfe\x02\x80" + bytes(4) + b"\x01" * 640
"""A masked binary frame of 640 bytes (20 ms of 16 kHz s16le), as the client sends."""
REPLY = b"\x82\x7e\x02\x80" + b"\x01" * 640
"""The server's unmasked frame of 20 ms agent audio."""
PERIOD_NS = 20_000_000


class Replier:
    """The reader's agent side: every 20 ms, a frame to each connection talking this second."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.next = time.monotonic() + PERIOD_NS / 1e9

    def timeout(self) -> float | None:
        return max(0.0, self.next - time.monotonic()) if self.share > 0 else None

    def due(self, conns: list[socket.socket]) -> None:
        if self.share <= 0 or time.monotonic() < self.next:
            return
        self.next += PERIOD_NS / 1e9
        turn = int(time.monotonic())
        for i, conn in enumerate(conns):
            if (i + turn) % 10 < self.share * 10:
                try:
                    conn.send(REPLY)
                except (BlockingIOError, OSError):
                    pass


def reader(listener: socket.socket, mode: str, replies: float) -> None:
    os.sched_setaffinity(0, {0})
    listener.setblocking(False)
    replier = Replier(replies)
    conns: list[socket.socket] = []
    if mode == "tick":
        while True:
            time.sleep(PERIOD_NS / 1e9)
            replier.due(conns)
            try:
                while True:
                    conn, _ = listener.accept()
                    conn.setblocking(False)
                    conns.append(conn)
            except BlockingIOError:
                pass
            for conn in conns:
                try:
                    while conn.recv(1 << 16):
                        pass
                except BlockingIOError:
                    pass
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while True:
        events = sel.select(replier.timeout())
        replier.due(conns)
        for key, _ in events:
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                conns.append(conn)
                continue
            try:
                data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(key.fileobj)
                conns.remove(key.fileobj)  # type: ignore[arg-type]
                key.fileobj.close()  # type: ignore[union-attr]


class Reads(asyncio.Protocol):
    """The writer's side of a connection: what arrives is read and dropped."""

    def data_received(self, data: bytes) -> None:
        pass


async def writer(port: int, calls: int, per_wake: int, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(calls):
        transport, _ = await loop.create_connection(Reads, "127.0.0.1", port)
        transports.append(transport)
    groups = [transports[i : i + per_wake] for i in range(0, calls, per_wake)]
    step = PERIOD_NS // len(groups)
    state = {"group": 0, "next": time.monotonic_ns() + step, "writes": 0}

    def wake() -> None:
        group = groups[state["group"]]
        for transport in group:
            transport.write(FRAME)
        state["writes"] += len(group)
        state["group"] = (state["group"] + 1) % len(groups)
        state["next"] += step
        timer.arm(state["next"])

    timer = FineTimer(loop, wake)
    timer.arm(state["next"])
    await asyncio.sleep(1.0)
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), state["writes"]
    await asyncio.sleep(seconds)
    r1, writes = resource.getrusage(resource.RUSAGE_SELF), state["writes"] - w0
    timer.close()
    for transport in transports:
        transport.close()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "wakes_s": len(groups) * 1e9 / PERIOD_NS,
        "us_per_write": 1e6 * cpu / writes,
        "us_per_call_s": 1e6 * cpu / (calls * seconds),
        "kernel_us_per_write": 1e6 * (r1.ru_stime - r0.ru_stime) / writes,
    }


def level(calls: int, per_wake: int, mode: str, seconds: float, replies: float) -> dict:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    pid = os.fork()
    if pid == 0:
        try:
            reader(listener, mode, replies)
        finally:
            os._exit(0)
    try:
        os.sched_setaffinity(0, {1})
        import uvloop

        return uvloop.run(writer(listener.getsockname()[1], calls, per_wake, seconds))
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", default="200,1000", help="connections, comma-separated")
    parser.add_argument("--per-wake", default="5,25", help="connections written per wake-up")
    parser.add_argument("--reader", default="wake,tick", help="wake, tick or both")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--replies", type=float, default=0.0, help="share of connections answered")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine: nproc {os.cpu_count()}, {cpu_model()}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; replies to {args.replies:.0%} of calls"
    )
    print(
        f"{'calls':>6} {'per wake':>8} {'wakes/s':>8} {'reader':>6} {'us/write':>9} {'kernel':>7} "
        f"{'us/call-s':>10}"
    )
    for calls in [int(x) for x in args.calls.split(",")]:
        for per_wake in [int(x) for x in args.per_wake.split(",")]:
            for mode in args.reader.split(","):
                r = level(calls, per_wake, mode, args.seconds, args.replies)
                print(
                    f"{calls:>6} {per_wake:>8} {r['wakes_s']:>8.0f} {mode:>6} {r['us_per_write']:>9.1f} "
                    f"{r['kernel_us_per_write']:>7.1f} {r['us_per_call_s']:>10.0f}"
                )
    load = os.getloadavg()
    print(f"(load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")


if __name__ == "__main__":
    main()
