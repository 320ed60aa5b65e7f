"""Child processes end with the process that started them, whatever ends it.

uvbench starts helpers (the embedded local server, pacing and analysis processes). A parent that
exits normally stops them; one killed outright (SIGKILL, the OOM killer, a crashed CI runner)
cannot, and an orphaned server would hold its port and CPU until someone finds it. So each child
asks the kernel to signal it when its parent dies (Linux `PR_SET_PDEATHSIG`), and where that is
not available, or the parent that matters is not the direct one, watches for the parent itself.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Callable

PARENT_ENV = "UVBENCH_PARENT_PID"
"""Set by a parent for a child it starts with `subprocess`: the pid the child must outlive not."""
_PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.5


def parent_env() -> dict[str, str]:
    """Environment entries for a child started with subprocess from this process."""
    return {PARENT_ENV: str(os.getpid())}


def expected_parent() -> int | None:
    """The pid a parent put in the environment, if any."""
    value = os.environ.get(PARENT_ENV, "")
    return int(value) if value.isdigit() else None


def parent_gone(parent: int) -> bool:
    """Whether `parent` is no longer this process's parent (it died and we were re-parented)."""
    return os.getppid() != parent


def signal_on_parent_death(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send `sig` to this process when its parent (the thread that forked it)
    dies. Linux only; False elsewhere. The signal survives exec."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


async def watch_parent(parent: int, on_gone: Callable[[], None]) -> None:
    """Call `on_gone` once `parent` is no longer this process's parent (checked twice a second):
    the portable fallback of `signal_on_parent_death`, and the check for a parent that died
    before the kernel was asked."""
    while not parent_gone(parent):
        await asyncio.sleep(WATCH_INTERVAL_S)
    on_gone()
