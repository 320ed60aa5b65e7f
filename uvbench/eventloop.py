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
"""How long another thread (the pacing process's pipe writer) may hold the interpreter lock while
the loop waits for it: 0.5 ms, not Python's default 5 ms, which would show as pacer lateness."""


def settle_for_pacing() -> None:
    """Process-wide settings of a pacing process, once its long-lived objects exist (modules,
    scenarios, HTTP clients, decoded clips): call it after the warm-up, before the first call.

    - What is alive now lives for the whole run: frozen out of the garbage collector's way.
    - The automatic collector is off. Its full passes walk every call in flight (about half a
      microsecond per object here, a thousand objects per call: 80 ms at 200 calls, measured in
      docs/benchmarks.md), holding up every pacer at once. A call leaves no reference cycle
      behind (`CallContext.dispose`), so its objects are freed by reference counting as it ends;
      the pacing loop's scheduler still collects when no call is running, or as a safety net when
      objects pile up anyway (`audio.sender.GC_BUDGET`), and that pause shows as loop lag."""
    import gc
    import sys

    gc.collect()
    gc.freeze()
    gc.disable()
    sys.setswitchinterval(PACING_SWITCH_INTERVAL_S)
