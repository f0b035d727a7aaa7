"""In-memory revocation store and bus: the embedded default, for one process.

``memory://NAME`` gives every user of the same name in this process the same store (or bus), so
several stacks in one process (the demo, the benchmark, tests) share revocations like separate
instances share Redis. ``memory://`` alone is private to the stack that opened it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from authz.revocation import Lookup

__all__ = ["MemoryBus", "MemoryStore", "memory_bus", "memory_store"]


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._jti: dict[str, float] = {}
        # subject -> (before, kept until)
        self._subjects: dict[str, tuple[float, float]] = {}
        self._epoch = 0

    async def revoke_token(self, jti: str, expires_at: float) -> int:
        self._jti[jti] = max(expires_at, self._jti.get(jti, 0.0))
        self._epoch += 1
        return self._epoch

    async def revoke_subject(self, subject: str, before: float, keep_seconds: float) -> int:
        current = self._subjects.get(subject)
        kept_until = self._clock() + keep_seconds
        if current is not None and current[1] > self._clock():
            # The later "before", kept as long as either revocation asked.
            before = max(before, current[0])
            kept_until = max(kept_until, current[1])
        self._subjects[subject] = (before, kept_until)
        self._epoch += 1
        return self._epoch

    async def lookup(self, jti: str | None, subject: str | None) -> Lookup:
        now = self._clock()
        revoked = False
        if jti is not None:
            until = self._jti.get(jti)
            if until is not None and until <= now:
                del self._jti[jti]
                until = None
            revoked = until is not None
        before = 0.0
        if subject is not None:
            entry = self._subjects.get(subject)
            if entry is not None and entry[1] <= now:
                del self._subjects[subject]
                entry = None
            before = entry[0] if entry is not None else 0.0
        return Lookup(revoked, before)

    async def epoch(self) -> int:
        return self._epoch

    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class MemoryBus:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[bytes]] = set()

    async def publish(self, payload: bytes) -> None:
        for queue in self._subscribers:
            queue.put_nowait(payload)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[bytes]]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield _drain(queue)
        finally:
            self._subscribers.discard(queue)

    async def close(self) -> None:
        return None


async def _drain(queue: asyncio.Queue[bytes]) -> AsyncIterator[bytes]:
    while True:
        yield await queue.get()


_STORES: dict[str, MemoryStore] = {}
_BUSES: dict[str, MemoryBus] = {}


def memory_store(name: str) -> MemoryStore:
    """The store called ``name`` in this process (a new private one when ``name`` is empty)."""
    return _STORES.setdefault(name, MemoryStore()) if name else MemoryStore()


def memory_bus(name: str) -> MemoryBus:
    return _BUSES.setdefault(name, MemoryBus()) if name else MemoryBus()
