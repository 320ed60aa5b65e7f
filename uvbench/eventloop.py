"""The event loop every uvbench process runs on: uvloop where it is installed.

uvloop holds more concurrent calls per core at the same pacing jitter than asyncio's own loop
(docs/benchmarks.md); it does not exist on Windows, where asyncio's loop is used.
"""

from __future__ import annotations


def fast_event_loop_factory():
    """uvloop's event loop factory where it is installed (not on Windows), else None (asyncio's)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


PACING_SWITCH_INTERVAL_S = 0.0005
"""How long a thread (a finished call's metrics and files) may hold the interpreter lock while the
loop waits for it: 0.5 ms, not Python's default 5 ms, which would show as pacer lateness."""


def settle_for_pacing() -> None:
    """Process-wide settings for the pacers' sake, once the run's long-lived objects exist.

    What is alive now (modules, schemas, scenarios) lives for the whole run: frozen out of the
    collector's way, a full collection mid-run walks only the calls' objects (half the pause,
    docs/benchmarks.md, client capacity)."""
    import gc
    import sys

    gc.collect()
    gc.freeze()
    sys.setswitchinterval(PACING_SWITCH_INTERVAL_S)
