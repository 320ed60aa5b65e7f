"""The pacing loop's two hot paths in Python alone, with no system call: a chunk sent and a frame
received.

- send: 1,000 paced senders (half of them speaking, half silent) with a socket whose transport
  drops what it is given; every sender is asked for its due chunks 50 times a round, as the
  scheduler does at each deadline. Per chunk: the sender, the composer, framing and masking, and
  the chunk's record.
- receive: 500 sockets each handed one 20 ms agent frame per `data_received` (a real-time agent's
  frames come one per read): the frame parser, the call's handler, the live playback view (queued,
  then scanned and taken in 64 frames at a time) and the agent audio spooled to /dev/null.

CPU time per chunk or frame, the best of 5 rounds. These set how much a pacing process can do per
call-second on top of its system calls (bench/wire_floor.py) and wake-ups.

    .venv/bin/python bench/hot_paths.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from array import array
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uvbench.audio.pacer import Composer, Schedule  # noqa: E402
from uvbench.audio.sender import PacedSender, Scheduler  # noqa: E402
from uvbench.call.live import LivePlayback, LiveState  # noqa: E402
from uvbench.call.wsclient import CallSocket  # noqa: E402

NS = 1_000_000_000
CHUNK_NS = 20_000_000


class DropTransport:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def open_socket() -> CallSocket:
    """A CallSocket past its handshake, on a transport that drops what it is given."""
    sock = CallSocket()
    sock.transport = DropTransport()  # type: ignore[assignment]
    sock._opened.set_result(None)  # noqa: SLF001 - the handshake is not what is measured
    sock._reading_frames = True  # noqa: SLF001
    sock._pending = None  # noqa: SLF001
    return sock


def make_sender(schedule: Schedule, composer: Composer, live: LiveState, scheduler: Scheduler) -> PacedSender:
    try:
        return PacedSender(schedule, composer, open_socket(), watch=live, scheduler=scheduler)
    except TypeError:  # a checkout from before 2026-12-03: a row per chunk, by callback, as its engine did
        rows = array("q")

        def on_sent(due: int, sent: int, start: int, end: int) -> None:
            rows.extend((due, sent, start, end))
            targets = live.stream_targets
            if targets and end >= min(targets):
                live.notify()

        return PacedSender(schedule, composer, open_socket(), on_sent, scheduler=scheduler)  # type: ignore[call-arg]


async def send_path(senders: int = 1000) -> float:
    scheduler = Scheduler.of(asyncio.get_running_loop())
    t0 = time.monotonic_ns() + 3600 * NS  # an hour ahead: the real clock never makes a chunk due
    speech = np.random.default_rng(1).integers(-3000, 3000, 16000 * 60).astype(np.int16)
    paced = []
    for i in range(senders):
        composer = Composer(320)
        if i % 2:
            composer.enqueue(speech)
        live = LiveState(LivePlayback(16000))
        sender = make_sender(Schedule(16000, 320, t0), composer, live, scheduler)
        paced.append(sender)
    for sender in paced:  # warm up: the first chunks
        sender.send_due(t0 + 5 * CHUNK_NS)
    best = float("inf")
    for rnd in range(5):
        start, chunks = time.process_time(), 0
        for step in range(6 + 50 * rnd, 56 + 50 * rnd):
            now = t0 + CHUNK_NS * step + 1
            for sender in paced:
                sender.send_due(now)
                chunks += 1
        best = min(best, (time.process_time() - start) / chunks)
    scheduler.close()
    return best


async def receive_path(sockets: int = 500) -> float:
    rng = np.random.default_rng(1)
    frames = []
    for i in range(64):
        pcm = rng.integers(-3000, 3000, 320).astype(np.int16)
        if i % 8 == 0:
            pcm[:40] = 0  # some frames need a scan: speech starting inside them
        payload = pcm.tobytes()
        frames.append(bytes((0x82, 126)) + len(payload).to_bytes(2, "big") + payload)
    socks, spools = [], []
    for _ in range(sockets):
        sock = open_socket()
        live = LiveState(LivePlayback(16000))
        playback = live.playback
        playback.rows = array("q")
        spool = open("/dev/null", "wb", buffering=32768)  # noqa: SIM115
        spools.append(spool)
        if hasattr(playback, "record"):
            playback.record = spool.write

            def on_binary(
                frame: bytes, now: int, playback: LivePlayback = playback, live: LiveState = live
            ) -> None:
                playback.receive(now, frame)  # as the call engine's receiver does
                if live.audio_waiters:
                    live.notify()

        else:  # a checkout from before 2026-12-03: its engine spooled each frame as it came

            def on_binary(
                frame: bytes, now: int, playback: LivePlayback = playback, live: LiveState = live, spool=spool
            ) -> None:
                playback.receive(now, frame)
                spool.write(frame if not len(frame) & 1 else frame[:-1])
                if live.audio_waiters:
                    live.notify()

        sock.start(on_binary, lambda text, now: None)
        socks.append(sock)
    best = float("inf")
    for _ in range(5):
        start, count = time.process_time(), 0
        for frame in frames:
            for sock in socks:
                sock.data_received(frame)
                count += 1
        best = min(best, (time.process_time() - start) / count)
    for spool in spools:
        spool.close()
    return best


async def main() -> None:
    send = await send_path()
    receive = await receive_path()
    print(f"send path:    {send * 1e6:.2f} µs CPU per chunk")
    print(f"receive path: {receive * 1e6:.2f} µs CPU per frame")


if __name__ == "__main__":
    asyncio.run(main())
