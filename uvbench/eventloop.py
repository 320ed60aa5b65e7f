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
