"""The paced sender: the I/O loop that puts the composer's chunks on the wire at their deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from uvbench.audio.pacer import Composer, Schedule

NS = 1_000_000_000


async def send_paced(
    schedule: Schedule,
    composer: Composer,
    send: Callable[[bytes], Awaitable[None]],
    stop: asyncio.Event,
    on_sent: Callable[[int, int, int, int], None],
) -> None:
    """Send chunk after chunk, each at its absolute deadline, until `stop` is set or `send` fails.

    `on_sent(due_ns, sent_ns, start_sample, end_sample)` records each chunk. Sleeping until an
    absolute deadline, never for "one chunk", is what keeps drift at zero: a late wake-up shortens
    the next sleep instead of pushing every later chunk back.
    """
    n = schedule.chunk_samples
    k = composer.next_chunk
    while not stop.is_set():
        due = schedule.due_ns(k)
        delay = due - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / NS)
        await send(composer.chunk(k))
        on_sent(due, time.monotonic_ns(), k * n, (k + 1) * n)
        k += 1
