"""The local revocation cache of one instance, and the loops that keep it honest.

A lookup is answered from the cache only while the cache can be trusted: the bus is connected
(so new revocations arrive as events) *and* the last epoch check succeeded (so events lost on a
silently dead connection are noticed). Otherwise every check reads the store. That gives the
staleness bound the README states: a revocation written to the store is applied everywhere
within one epoch-check interval, a short grace for events in flight and one store round trip,
whatever happens to the bus.

Races are closed with a generation counter: a store read that started before a flush or an event
must not write its (possibly older) answer into the cache after it.

Lookups come from grpc's threads as well as the event loop, and a TTL-cache read reorders and
expires entries, so every access to the two caches holds one lock. Everything else (the bus, the
epoch check, store reads) runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

from authz.errors import BusError, StoreUnavailable
from authz.lru import ExpiringLRU
from authz.revocation import (
    InvalidationBus,
    RevocationEvent,
    RevocationStore,
    decode_event,
    is_revoked,
    issued_before,
)
from authz.settings import RevocationCacheSettings

__all__ = ["RevocationCache", "follow_bus", "watch_epoch"]

log = logging.getLogger("doma.authz.revocation")

_RECENT_EPOCHS = 4096
_EVENT_GRACE_SECONDS = 0.05
FlushCause = Literal["bus_connected", "bus_lost", "epoch_changed", "epoch_unknown"]


class RevocationCache:
    """Answers "is this token revoked?" for the decision core (its ``RevocationCheck`` port)."""

    def __init__(
        self,
        store: RevocationStore,
        *,
        cache: RevocationCacheSettings,
        on_store_error: Literal["deny", "allow"] = "deny",
        clock: Callable[[], float] = time.time,
        on_applied: Callable[[RevocationEvent, float], None] | None = None,
    ):
        self._store = store
        self._enabled = cache.enabled and cache.max_entries > 0
        size = max(cache.max_entries, 1)
        self._jti: ExpiringLRU[str, bool] = ExpiringLRU(size, cache.ttl)
        self._subject: ExpiringLRU[str, float] = ExpiringLRU(size, cache.ttl)
        self._lock = threading.Lock()
        self._store_error_reason = (
            "revocation_store_unavailable" if on_store_error == "deny" else None
        )
        self._clock = clock
        self._on_applied = on_applied
        self._generation = 0
        self._bus_up = False
        self._epoch_fresh = False
        self._trusted = False
        self.epoch: int | None = None
        # Events applied lately, by epoch, kind and target: an instance applies its own revokes
        # at once and then hears them again from the bus. Not by epoch alone: a store that
        # restarted without its data numbers its revocations from 1 again.
        self._recent_events: OrderedDict[tuple[int, str, str], None] = OrderedDict()
        # The epochs of those events since the store's epoch last went backwards.
        self._recent_epochs: set[int] = set()
        # Plain counters, read by the metrics collector at scrape time.
        self.hits = 0
        self.misses = 0
        self.store_errors = 0
        self.events_received = 0
        self.revocations_applied = 0
        self.flushes: dict[str, int] = {}

    # -- the port ------------------------------------------------------------------
    def check_cached(self, claims: Mapping[str, Any]) -> tuple[bool, str | None]:
        jti, subject = _identifiers(claims)
        if jti is None and subject is None:
            return True, None
        with self._lock:
            if not self._trusted:
                return False, None
            revoked = self._jti.get(jti) if jti is not None else False
            before = self._subject.get(subject) if subject is not None else 0.0
            if revoked is None or before is None:
                return False, None
            self.hits += 1
        if revoked or (before and issued_before(claims.get("iat"), before)):
            return True, "token_revoked"
        return True, None

    async def check(self, claims: Mapping[str, Any]) -> str | None:
        known, answer = self.check_cached(claims)
        if known:
            return answer
        jti, subject = _identifiers(claims)
        self.misses += 1
        generation = self._generation
        try:
            found = await self._store.lookup(jti, subject)
        except StoreUnavailable:
            self.store_errors += 1
            return self._store_error_reason
        with self._lock:
            if self._trusted and generation == self._generation:
                if jti is not None:
                    self._jti.put(jti, found.jti_revoked)
                if subject is not None:
                    self._subject.put(subject, found.subject_before)
        return "token_revoked" if is_revoked(found, claims.get("iat")) else None

    # -- what the loops report -----------------------------------------------------
    @property
    def bus_connected(self) -> bool:
        return self._bus_up

    @property
    def store_healthy(self) -> bool:
        return self._epoch_fresh and self._store.healthy()

    def apply(self, event: RevocationEvent) -> None:
        """A revocation announced on the bus (or made by this instance)."""
        key = (event.epoch, event.kind, event.target)
        if key in self._recent_events:
            return
        self._recent_events[key] = None
        if len(self._recent_events) > _RECENT_EPOCHS:
            (old_epoch, _, _), _ = self._recent_events.popitem(last=False)
            self._recent_epochs.discard(old_epoch)
        self._recent_epochs.add(event.epoch)
        # Every epoch up to here seen as an event: the next epoch check has nothing to catch up
        # on, so a steady stream of revocations does not flush the cache every interval.
        while self.epoch is not None and self.epoch + 1 in self._recent_epochs:
            self.epoch += 1
        with self._lock:
            self._generation += 1
            if event.kind == "jti":
                if self._trusted:
                    self._jti.put(event.target, True)
            else:
                # Drop rather than overwrite: the store may already hold a later "before".
                self._subject.pop(event.target)
        self.revocations_applied += 1
        if self._on_applied is not None:
            self._on_applied(event, max(self._clock() - event.revoked_at, 0.0))

    def receive(self, payload: bytes) -> None:
        self.events_received += 1
        event = decode_event(payload)
        if event is None:
            log.warning("ignored an unreadable revocation event", extra={"bytes": len(payload)})
            return
        self.apply(event)

    def bus_connected_changed(self, up: bool) -> None:
        self._bus_up = up
        # Connected: events made while we were away were never seen. Lost: new ones won't be.
        self.flush("bus_connected" if up else "bus_lost")

    def epoch_checked(self, epoch: int | None) -> None:
        """The store's epoch (None: it could not be read)."""
        if epoch is None:
            if self._epoch_fresh:
                self._epoch_fresh = False
                self.flush("epoch_unknown")
            return
        changed = epoch != self.epoch
        if self.epoch is not None and epoch < self.epoch:
            # The store restarted without its data, or failed over to a replica behind it: its
            # epochs count again from there, so the epochs seen before say nothing now.
            self._recent_epochs.clear()
            self._recent_events.clear()
        self.epoch = epoch
        was_fresh, self._epoch_fresh = self._epoch_fresh, True
        if changed or not was_fresh:
            self.flush("epoch_changed")

    def flush(self, cause: FlushCause) -> None:
        with self._lock:
            self._generation += 1
            self._jti.clear()
            self._subject.clear()
            self._trusted = self._enabled and self._bus_up and self._epoch_fresh
        self.flushes[cause] = self.flushes.get(cause, 0) + 1


def _identifiers(claims: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The token's jti and subject, each None unless a non-empty string."""
    jti, subject = claims.get("jti"), claims.get("sub")
    return (
        jti if isinstance(jti, str) and jti else None,
        subject if isinstance(subject, str) and subject else None,
    )


async def follow_bus(
    bus: InvalidationBus,
    cache: RevocationCache,
    *,
    initial_backoff: float = 0.1,
    max_backoff: float = 5.0,
) -> None:
    """Stay subscribed to the bus for ever, reconnecting with capped, jittered backoff."""
    delay = initial_backoff
    while True:
        connected = False
        try:
            async with bus.subscribe() as payloads:
                connected = True
                cache.bus_connected_changed(True)
                log.info("revocation bus subscribed", extra={"event": "bus_connected"})
                delay = initial_backoff
                async for payload in payloads:
                    cache.receive(payload)
            raise BusError("subscription ended")
        except BusError as exc:
            log.warning(
                "revocation bus unavailable", extra={"event": "bus_unavailable", "error": str(exc)}
            )
        finally:
            if connected:
                cache.bus_connected_changed(False)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto
        delay = min(delay * 2, max_backoff)


async def watch_epoch(store: RevocationStore, cache: RevocationCache, interval: float) -> None:
    """Read the store's epoch every ``interval`` seconds: lost events show up as a changed epoch."""
    grace = min(interval, _EVENT_GRACE_SECONDS)
    while True:
        try:
            epoch: int | None = await store.epoch()
        except StoreUnavailable:
            epoch = None
        if epoch is not None and cache.epoch is not None and epoch > cache.epoch:
            # A revoke's event trails its store write by a moment: give it that moment before
            # flushing, so that events which are merely in flight do not empty the cache.
            await asyncio.sleep(grace)
        cache.epoch_checked(epoch)
        await asyncio.sleep(interval)
