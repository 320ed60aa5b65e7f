"""A least-recently-used cache bounded by the bytes its values hold, not by their number.

functools.lru_cache bounds entries: with speech of any length (a two-minute reply is 11 MB at
48 kHz) 512 entries may hold gigabytes. This one evicts the least recently used values until the
total is within `max_bytes`; a value bigger than the whole budget is returned and not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class SizedLru(Generic[V]):
    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._values: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        """The cached value of `key`, or `make()`'s (kept if it fits). `make` runs outside the lock:
        two threads missing the same key at once may both make it (callers that must render once
        hold their own lock, as the speech engine does)."""
        with self._lock:
            found = self._values.get(key)
            if found is not None:
                self._values.move_to_end(key)
                return found[0]
        value = make()
        size = self._size_of(value)
        with self._lock:
            if size <= self.max_bytes and key not in self._values:
                self._values[key] = (value, size)
                self.bytes += size
                while self.bytes > self.max_bytes:
                    _, (_, dropped) = self._values.popitem(last=False)
                    self.bytes -= dropped
        return value

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self.bytes = 0
