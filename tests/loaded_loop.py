"""A loaded event loop for the pacer's tests, and a probe of how late the loop itself wakes up."""

from __future__ import annotations

import asyncio
import time


async def block_the_loop(stop: asyncio.Event) -> None:
    """Other calls' work: the loop is blocked 3 ms out of every 10 until `stop`."""
    while not stop.is_set():
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0.007)


async def probe_the_loop(stop: asyncio.Event, lateness_ms: list[float]) -> None:
    """How late the loop wakes a 1 ms sleep, appended to `lateness_ms` until `stop`: what a busy
    machine (and the blocks above) does to every timer of the loop, the pacer's included."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.001)
        lateness_ms.append((time.perf_counter() - start - 0.001) * 1e3)
