"""The paced sender: the I/O loop that puts the composer's chunks on the wire at their deadlines.

`PacedSender` sends each chunk at its absolute deadline, never "sleep one chunk": a late wake-up
shortens the next wait instead of pushing every later chunk back, so the stream cannot drift. It
is driven by timer callbacks writing straight to the call's socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from uvbench.audio.pacer import Composer, Schedule

MS = 1_000_000


class PacedSender:
    """Each chunk at its deadline, as timer callbacks: one timer per chunk, no task.

    At hundreds of calls per process a task per stream costs a future, a wake-up and a task step
    per chunk; here a chunk costs one timer and one call. `socket` is anything with
    `send_binary(bytes)` (raising `websockets.ConnectionClosed` once closed), `writing_paused`
    and `call_when_writable(callback)`; when its buffer is full the next chunk waits for it to
    drain, and that wait shows as lateness. `done` resolves when the sender stops: on `stop()`,
    when the socket closes, or on an exception of its own (then kept in `error`).

    Some loops' timers fire early (uvloop's count whole milliseconds against a clock cached at
    the start of the loop iteration, so up to about a millisecond early): a chunk is never sent
    before it is due; an early timer is set again for the remainder.
    """

    def __init__(
        self,
        schedule: Schedule,
        composer: Composer,
        socket: Any,
        on_sent: Callable[[int, int, int, int], None],
    ) -> None:
        self.schedule = schedule
        self.composer = composer
        self.socket = socket
        self.on_sent = on_sent
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.stopped_ns: int | None = None
        """When the stream ended: `stop()` was called or the socket refused a chunk."""
        self.error: Exception | None = None
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None

    def start(self) -> None:
        self._arm(self.schedule.due_ns(self.composer.next_chunk), time.monotonic_ns())

    def stop(self) -> None:
        if self.stopped_ns is None:
            self._finish(time.monotonic_ns())

    def _finish(self, t_ns: int, error: Exception | None = None) -> None:
        self.stopped_ns, self.error = t_ns, error
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self.done.done():
            self.done.set_result(None)

    def _arm(self, due: int, now: int) -> None:
        delay = due - now
        # Whole milliseconds, rounded up: uvloop's timers count whole milliseconds anyway (a
        # shorter delay would become "at once" and spin the loop until due), and asyncio's
        # loop sleeps in epoll's milliseconds too. An early timer is the exception then.
        self._handle = self.loop.call_later(-(-delay // MS) / 1000 if delay > 0 else 0, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self.stopped_ns is not None:
            return
        socket, composer, schedule = self.socket, self.composer, self.schedule
        n = schedule.chunk_samples
        now = time.monotonic_ns()
        k = composer.next_chunk
        due = schedule.due_ns(k)
        try:
            # Every chunk due by now leaves now: a late wake-up is paid back at once.
            while due <= now:
                if socket.writing_paused:
                    socket.call_when_writable(self._fire)
                    return
                socket.send_binary(composer.chunk(k))
                now = time.monotonic_ns()
                self.on_sent(due, now, k * n, (k + 1) * n)
                k += 1
                due = schedule.due_ns(k)
        except ConnectionClosed:
            self._finish(time.monotonic_ns())
            return
        except Exception as exc:
            self._finish(time.monotonic_ns(), exc)
            return
        self._arm(due, now)
