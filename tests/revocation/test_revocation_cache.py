"""The local cache and its loops, with the in-memory store and bus (no network)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from authz.errors import AlreadyExpired, BusError, InvalidRevocation, StoreUnavailable
from authz.revocation import Lookup, RevocationEvent, decode_event, encode_event
from authz.revocation_cache import RevocationCache, follow_bus, watch_epoch
from authz.revocation_memory import MemoryBus, MemoryStore
from authz.revoker import Revoker
from authz.settings import RevocationCacheSettings


class CountingStore(MemoryStore):
    """The memory store, counting lookups and able to fail like a dead Redis."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.down = False

    async def lookup(self, jti: str | None, subject: str | None) -> Lookup:
        self.lookups += 1
        if self.down:
            raise StoreUnavailable("down")
        return await super().lookup(jti, subject)

    async def epoch(self) -> int:
        if self.down:
            raise StoreUnavailable("down")
        return await super().epoch()


class SilentBus(MemoryBus):
    """A bus whose connection stays up but delivers nothing: a silently dead subscription."""

    async def publish(self, payload: bytes) -> None:
        return None


class DroppableBus(MemoryBus):
    def __init__(self) -> None:
        super().__init__()
        self.drop = asyncio.Event()
        self.subscriptions = 0

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[bytes]]:
        self.subscriptions += 1
        self.drop = asyncio.Event()
        async with super().subscribe() as payloads:
            yield self._until_dropped(payloads)

    async def _until_dropped(self, payloads: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        getter = asyncio.ensure_future(payloads.__anext__())
        dropped = asyncio.ensure_future(self.drop.wait())
        try:
            while True:
                await asyncio.wait({getter, dropped}, return_when=asyncio.FIRST_COMPLETED)
                if dropped.done():
                    raise BusError("dropped")
                yield getter.result()
                getter = asyncio.ensure_future(payloads.__anext__())
        finally:
            getter.cancel()
            dropped.cancel()


CLAIMS = {"jti": "j-1", "sub": "alice", "iat": int(time.time()) - 10}


def make(store, bus, interval=0.05):  # type: ignore[no-untyped-def]
    cache = RevocationCache(store, cache=RevocationCacheSettings())
    revoker = Revoker(store, bus, subject_ttl=3600, on_revoked=cache.apply)
    return cache, revoker


async def running(cache, store, bus, interval=0.05):  # type: ignore[no-untyped-def]
    tasks = [
        asyncio.create_task(follow_bus(bus, cache, initial_backoff=0.01, max_backoff=0.05)),
        asyncio.create_task(watch_epoch(store, cache, interval)),
    ]
    await eventually(lambda: cache.bus_connected and cache.store_healthy)
    return tasks


async def eventually(condition, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    for _ in range(int(within / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never held")


async def stop(tasks) -> None:  # type: ignore[no-untyped-def]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_warm_cache_answers_without_the_store_and_events_revoke_at_once():
    store, bus = CountingStore(), MemoryBus()
    cache, _ = make(store, bus)
    other_cache, revoker = make(store, bus)
    tasks = await running(cache, store, bus) + await running(other_cache, store, bus)
    try:
        assert await cache.check(CLAIMS) is None
        before = store.lookups
        for _ in range(100):
            assert await cache.check(CLAIMS) is None
        assert store.lookups == before and cache.hits >= 100

        await revoker.revoke_token("j-1", time.time() + 600)
        await asyncio.sleep(0)  # let the bus deliver
        assert await cache.check(CLAIMS) == "token_revoked"
        assert store.lookups == before  # the event updated the cache: no store read needed
    finally:
        await stop(tasks)


async def test_revocations_seen_on_the_bus_do_not_flush_the_cache_at_epoch_checks():
    store, bus = CountingStore(), MemoryBus()
    cache, _ = make(store, bus)
    _, revoker = make(store, bus)  # another instance
    tasks = await running(cache, store, bus, interval=0.01)
    try:
        flushes = dict(cache.flushes)
        for index in range(5):
            await revoker.revoke_token(f"other-{index}", time.time() + 60)
            await asyncio.sleep(0.03)  # several epoch checks
        assert cache.flushes == flushes and cache.epoch == 5
    finally:
        await stop(tasks)


async def test_subject_revocation_denies_older_tokens_only():
    store, bus = CountingStore(), MemoryBus()
    cache, revoker = make(store, bus)
    tasks = await running(cache, store, bus)
    try:
        now = time.time()
        await revoker.revoke_subject("alice", now)
        assert await cache.check({"sub": "alice", "iat": int(now) - 5}) == "token_revoked"
        assert await cache.check({"sub": "alice"}) == "token_revoked"  # no iat: cannot prove newer
        # NaN is no time at all, later or earlier: it cannot prove newer either.
        assert await cache.check({"sub": "alice", "iat": float("nan")}) == "token_revoked"
        assert await revoker.is_revoked(None, "alice", float("nan"))
        assert await cache.check({"sub": "alice", "iat": int(now) + 5}) is None
        assert await cache.check({"sub": "bob", "iat": int(now) - 5}) is None
    finally:
        await stop(tasks)


async def test_lost_events_are_caught_by_the_epoch_within_one_interval():
    store, bus = CountingStore(), SilentBus()
    cache, _ = make(store, bus)
    revoker = Revoker(store, bus, subject_ttl=3600)  # another instance: no local apply
    tasks = await running(cache, store, bus, interval=0.05)
    try:
        assert await cache.check(CLAIMS) is None  # cached as not revoked
        await revoker.revoke_token("j-1", time.time() + 600)
        assert await cache.check(CLAIMS) is None  # the event was lost: still cached
        started = time.monotonic()
        for _ in range(500):
            if await cache.check(CLAIMS) is not None:
                break
            await asyncio.sleep(0.002)
        assert time.monotonic() - started < 0.5
        assert cache.flushes.get("epoch_changed", 0) >= 1
    finally:
        await stop(tasks)


async def test_bus_drop_flushes_and_reads_the_store_until_resubscribed():
    store, bus = CountingStore(), DroppableBus()
    cache, _ = make(store, bus)
    tasks = await running(cache, store, bus)
    try:
        await cache.check(CLAIMS)
        bus.drop.set()
        await eventually(lambda: not cache.bus_connected)
        assert cache.flushes["bus_lost"] == 1
        # Revoked behind the cache's back while the bus is down: the next check sees it.
        await Revoker(store, MemoryBus(), subject_ttl=60).revoke_token("j-1", time.time() + 60)
        assert await cache.check(CLAIMS) == "token_revoked"
        await eventually(lambda: cache.bus_connected)
        assert bus.subscriptions >= 2
    finally:
        await stop(tasks)


@pytest.mark.parametrize(
    ("on_error", "expected"), [("deny", "revocation_store_unavailable"), ("allow", None)]
)
async def test_store_outage_outcome_is_configured(on_error, expected):
    store = CountingStore()
    cache = RevocationCache(store, cache=RevocationCacheSettings(), on_store_error=on_error)
    store.down = True
    assert await cache.check(CLAIMS) == expected
    assert cache.store_errors == 1


async def test_a_failed_epoch_check_stops_trusting_the_cache():
    store, bus = CountingStore(), MemoryBus()
    cache, _ = make(store, bus)
    tasks = await running(cache, store, bus)
    try:
        await cache.check(CLAIMS)
        store.down = True
        await eventually(lambda: not cache.store_healthy)
        assert await cache.check(CLAIMS) == "revocation_store_unavailable"
        store.down = False
        await eventually(lambda: cache.store_healthy)
        assert await cache.check(CLAIMS) is None
    finally:
        await stop(tasks)


async def test_a_lookup_in_flight_during_an_event_does_not_cache_its_stale_answer():
    class SlowStore(CountingStore):
        gate = asyncio.Event()

        async def lookup(self, jti, subject):  # type: ignore[no-untyped-def]
            found = await super().lookup(jti, subject)
            await self.gate.wait()
            return found

    store, bus = SlowStore(), MemoryBus()
    cache, revoker = make(store, bus)
    tasks = await running(cache, store, bus)
    try:
        pending = asyncio.create_task(cache.check(CLAIMS))
        await asyncio.sleep(0.01)
        await revoker.revoke_subject("alice", time.time())
        SlowStore.gate.set()
        assert await pending is None  # read before the revoke: fine for that one check
        assert await cache.check(CLAIMS) == "token_revoked"
    finally:
        await stop(tasks)


async def test_revoking_an_expired_token_or_without_exp_stores_nothing():
    store = MemoryStore()
    revoker = Revoker(store, MemoryBus(), subject_ttl=60, retention_margin=30)
    with pytest.raises(AlreadyExpired):
        await revoker.revoke_token("old", time.time() - 31)
    with pytest.raises(InvalidRevocation, match="exp is required"):
        await revoker.revoke_token("unknown", 0)
    with pytest.raises(InvalidRevocation):
        await revoker.revoke_token("line\nbreak", time.time() + 60)
    with pytest.raises(InvalidRevocation):
        await revoker.revoke_subject("", None)
    assert await store.epoch() == 0


def test_events_round_trip_and_garbage_is_ignored():
    event = RevocationEvent("subject", "alice", 12.5, 7, 11.0)
    assert decode_event(encode_event(event)) == event
    for garbage in (b"", b"{", b"[]", b'{"v":2}', b'{"v":1,"kind":"jti","target":"x"}'):
        assert decode_event(garbage) is None


class RestartingStore(CountingStore):
    def restart(self) -> None:
        """Like a Redis that kept nothing on disk: every revocation gone, the epoch back to 0."""
        MemoryStore.__init__(self)


@pytest.mark.parametrize("noticed", [True, False], ids=["reset seen", "reset not seen yet"])
async def test_a_store_restarted_without_its_data_loses_no_later_revocation(noticed: bool):
    store, bus = RestartingStore(), MemoryBus()
    cache, _ = make(store, bus)
    revoker = Revoker(store, bus, subject_ttl=3600)  # another instance: events only
    listener = asyncio.create_task(follow_bus(bus, cache, initial_backoff=0.01))
    try:
        await eventually(lambda: cache.bus_connected)
        cache.epoch_checked(await store.epoch())
        for index in range(3):
            await revoker.revoke_token(f"earlier-{index}", time.time() + 600)
        await eventually(lambda: cache.epoch == 3)
        store.restart()
        if noticed:
            cache.epoch_checked(await store.epoch())
        victim = {"jti": "victim", "sub": "mallory", "iat": int(time.time()) - 10}
        assert await cache.check(victim) is None  # cached as not revoked
        # The store numbers this revocation 1, as it did the first one before it restarted.
        await revoker.revoke_token("victim", time.time() + 600)
        await eventually(lambda: cache.revocations_applied == 4)
        assert await cache.check(victim) == "token_revoked"
    finally:
        await stop([listener])


async def test_epochs_seen_before_the_store_went_back_never_hide_lost_events():
    store, bus = RestartingStore(), MemoryBus()
    cache, _ = make(store, bus)
    for epoch in (1, 2, 3):
        cache.apply(RevocationEvent("jti", f"earlier-{epoch}", time.time() + 600, epoch, 0.0))
    cache.epoch_checked(3)
    cache.epoch_checked(0)  # the store restarted: its next revocations are 1, 2, 3...
    flushes = cache.flushes.get("epoch_changed", 0)
    # 1 to 3 are lost on the bus; 4 arrives. The epoch must not leap over the lost ones...
    cache.apply(RevocationEvent("jti", "later", time.time() + 600, 4, 0.0))
    assert cache.epoch == 0
    # ...so the next epoch check sees 4, and flushes what the lost events would have changed.
    cache.epoch_checked(4)
    assert cache.flushes["epoch_changed"] == flushes + 1


async def test_the_memory_store_never_shortens_what_an_earlier_revoke_kept():
    now = [1_000_000.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.revoke_token("j", now[0] + 3600)
    await store.revoke_token("j", now[0] + 1)
    await store.revoke_subject("alice", now[0] + 50, 3650)
    await store.revoke_subject("alice", now[0], 60)
    now[0] += 100
    found = await store.lookup("j", "alice")
    assert found.jti_revoked and found.subject_before == 1_000_050.0
