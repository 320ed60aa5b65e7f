"""A wake-up at an absolute nanosecond of CLOCK_MONOTONIC, finer than the event loop's own timers.

asyncio's and uvloop's timers count whole milliseconds (uvloop's against a clock cached at the start
of each loop iteration, so they fire up to a millisecond early or late). A chunk due at t must leave
at t, not at the next millisecond: a rounded timer puts the sender's own delay into every figure
anchored on the end of the user's speech.

On Linux, `FineTimer` is a timerfd armed at an absolute time (TFD_TIMER_ABSTIME) and watched by the
loop like a socket: the kernel wakes the loop within tens of microseconds of the time, and the
process's timer slack is set to 1 ns so the kernel does not defer the wake-up by its default 50 µs
to batch it with others. No thread, no spinning: between wake-ups the loop sleeps in epoll.
Elsewhere (or where timerfd cannot be made) the loop's own timer is used, rounded up to whole
milliseconds; callers must accept a wake-up that comes early (they re-arm for the remainder).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
import weakref
from collections.abc import Callable

NS = 1_000_000_000
MS = 1_000_000
_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_CLOEXEC = 0o2000000
_PR_SET_TIMERSLACK = 29


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


class FineTimer:
    """One re-armable wake-up: `arm(t_ns)` calls `callback()` on the loop once CLOCK_MONOTONIC
    (time.monotonic_ns) reaches t_ns; arming again replaces the previous time. `kind` says which
    source is in use: "timerfd" (nanoseconds) or "loop" (whole milliseconds)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self.loop = loop
        self.callback = callback
        self._fd = -1
        self._handle: asyncio.TimerHandle | None = None
        self.kind = "loop"
        if _LIBC is not None and os.environ.get("UVBENCH_TIMER") != "loop":
            fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                try:
                    loop.add_reader(fd, self._readable)
                except (NotImplementedError, RuntimeError, OSError):
                    os.close(fd)
                else:
                    self._fd = fd
                    self.kind = "timerfd"
                    # A loop dropped without close() (a test's) must not leak the descriptor.
                    self._finalizer = weakref.finalize(self, os.close, fd)
                    self._spec = _Itimerspec()
                    # 1 ns of slack for this thread's timers (the default 50 µs would defer them).
                    _LIBC.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0)

    def arm(self, t_ns: int) -> None:
        if self._fd >= 0:
            spec = self._spec
            spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(max(t_ns, 1), NS)
            _LIBC.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None)  # type: ignore[union-attr]
            return
        if self._handle is not None:
            self._handle.cancel()
        # Whole milliseconds, rounded up: a shorter delay on uvloop means "at once" and would spin
        # the loop until due.
        delay_ns = t_ns - time.monotonic_ns()
        self._handle = self.loop.call_later(-(-delay_ns // MS) / 1000 if delay_ns > 0 else 0, self._fired)

    def _readable(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # re-armed after it expired and before the loop read it
            return
        self.callback()

    def _fired(self) -> None:
        self._handle = None
        self.callback()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.loop.remove_reader(self._fd)
            except (RuntimeError, ValueError, OSError):  # the loop is closed already
                pass
            self._finalizer()
            self._fd = -1
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
