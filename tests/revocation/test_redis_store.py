"""The Redis store against real Redis: one server, a three-node cluster, and a server that dies."""

from __future__ import annotations

import asyncio
import time

import pybreaker
import pytest
from redis.asyncio import Redis

from authz.bus_redis import RedisPubSubBus
from authz.errors import StoreUnavailable
from authz.revocation_memory import MemoryBus
from authz.revocation_redis import RedisStore, redis_client, store_keys
from authz.revoker import Revoker
from tests.support.services import (
    PrivateRedis,
    PrivateSentinel,
    RedisClusterNodes,
    unique_prefix,
)


def make_store(url: str, prefix: str, *, failures: int = 3, reset: float = 0.5) -> RedisStore:
    breaker = pybreaker.CircuitBreaker(fail_max=failures, reset_timeout=reset)
    return RedisStore(redis_client(url, 0.25), key_prefix=prefix, timeout=0.25, breaker=breaker)


async def test_keys_follow_the_documented_layout_and_expire_with_the_token(redis_url):
    prefix = unique_prefix("layout")
    store = make_store(redis_url, prefix)
    raw = Redis.from_url(redis_url)
    try:
        exp = int(time.time()) + 120
        assert await store.revoke_token("jti-1", exp) == 1
        assert await store.revoke_subject("alice", time.time(), 3600) == 2
        assert await store.epoch() == 2
        jti_key, subject_key, epoch_key = (
            p + s for p, s in zip(store_keys(prefix), ("jti-1", "alice", ""), strict=True)
        )
        assert jti_key == "{" + prefix + "}:jti:jti-1"
        assert await raw.expiretime(jti_key) == exp
        assert 3590 < await raw.ttl(subject_key) <= 3600
        assert await raw.ttl(epoch_key) == -1  # the epoch never expires

        found = await store.lookup("jti-1", "alice")
        assert found.jti_revoked and found.subject_before > 0
        assert not (await store.lookup("other", None)).jti_revoked
        assert (await store.lookup(None, "bob")).subject_before == 0.0
    finally:
        await raw.delete(*[k async for k in raw.scan_iter(match="{" + prefix + "}*")])
        await raw.aclose()
        await store.close()


async def test_a_later_subject_revocation_wins_and_an_earlier_one_does_not_move_it_back(redis_url):
    store = make_store(redis_url, unique_prefix("subject"))
    try:
        await store.revoke_subject("alice", 2000.0, 60)
        await store.revoke_subject("alice", 1000.0, 60)
        assert (await store.lookup(None, "alice")).subject_before == 2000.0
    finally:
        await store.close()


async def test_a_second_revoke_never_shortens_what_the_first_kept(redis_url):
    prefix = unique_prefix("again")
    store = make_store(redis_url, prefix)
    raw = Redis.from_url(redis_url)
    jti_key, subject_key, _ = (
        p + s for p, s in zip(store_keys(prefix), ("jti-1", "alice", ""), strict=True)
    )
    try:
        later = int(time.time()) + 3600
        await store.revoke_token("jti-1", later)
        await store.revoke_token("jti-1", int(time.time()) + 2)
        assert await raw.expiretime(jti_key) == later
        await store.revoke_token("jti-1", later + 60)  # a later expiry still extends it
        assert await raw.expiretime(jti_key) == later + 60
        await store.revoke_subject("alice", time.time() + 50, 3650)
        await store.revoke_subject("alice", time.time(), 60)
        assert await raw.ttl(subject_key) > 3600
        assert (await store.lookup(None, "alice")).subject_before > time.time() + 40
    finally:
        await raw.delete(*[k async for k in raw.scan_iter(match="{" + prefix + "}*")])
        await raw.aclose()
        await store.close()


async def test_a_subject_revoked_ahead_of_now_is_kept_subject_ttl_after_that_time(redis_url):
    prefix = unique_prefix("ahead")
    store = make_store(redis_url, prefix)
    raw = Redis.from_url(redis_url)
    revoker = Revoker(store, MemoryBus(), subject_ttl=60)
    try:
        # An issuer whose clock runs 50 s ahead: its tokens issued up to then live 60 s more.
        result = await revoker.revoke_subject("alice", time.time() + 50)
        assert 105 < await raw.ttl(store_keys(prefix)[1] + "alice") <= 110
        assert result.kept_until > time.time() + 105
    finally:
        await raw.delete(*[k async for k in raw.scan_iter(match="{" + prefix + "}*")])
        await raw.aclose()
        await store.close()


async def test_the_store_works_on_a_three_node_redis_cluster():
    cluster = RedisClusterNodes(3).start()
    try:
        prefix = unique_prefix("cluster")
        store = make_store(cluster.url, prefix)
        try:
            # Many ids: without the hash tag these would land in different slots and fail.
            for index in range(20):
                await store.revoke_token(f"jti-{index}", time.time() + 60)
                await store.revoke_subject(f"user-{index}", time.time(), 60)
            assert await store.epoch() == 40
            assert (await store.lookup("jti-7", "user-7")).jti_revoked
            assert not (await store.lookup("jti-99", "user-99")).jti_revoked
        finally:
            await store.close()
    finally:
        cluster.close()


async def test_the_store_and_the_pubsub_bus_work_through_redis_sentinel():
    sentinel = PrivateSentinel().start()
    try:
        prefix = unique_prefix("sentinel")
        store = make_store(sentinel.url, prefix)
        bus = RedisPubSubBus(sentinel.url, key_prefix=prefix, timeout=1, heartbeat=1)
        try:
            assert await store.revoke_token("jti-s", time.time() + 60) == 1
            assert (await store.lookup("jti-s", None)).jti_revoked
            # The data really is on the master the sentinel names.
            direct = Redis.from_url(sentinel.master.url)
            assert await direct.exists("{" + prefix + "}:jti:jti-s") == 1
            await direct.aclose()
            async with bus.subscribe() as payloads:
                await bus.publish(b"hello")
                assert await asyncio.wait_for(anext(payloads), 5) == b"hello"
        finally:
            await bus.close()
            await store.close()
    finally:
        sentinel.close()


async def test_a_dead_redis_fails_fast_behind_the_breaker_and_recovers_when_it_returns():
    server = PrivateRedis().start()
    store = make_store(server.url, unique_prefix("breaker"), failures=2, reset=0.3)
    try:
        await store.revoke_token("j", time.time() + 60)
        server.stop()
        for _ in range(2):
            with pytest.raises(StoreUnavailable):
                await store.lookup("j", None)
        assert store.breaker_state == "open" and not store.healthy()
        started = time.perf_counter()
        for _ in range(100):
            with pytest.raises(StoreUnavailable, match="breaker open"):
                await store.lookup("j", None)
        assert time.perf_counter() - started < 0.1  # no connection attempt per call

        server.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                await store.lookup("j", None)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store never recovered"
                await asyncio.sleep(0.05)
        assert store.breaker_state == "closed"
    finally:
        await store.close()
        server.close()


async def test_a_frozen_redis_costs_one_timeout_per_call_until_the_breaker_opens():
    server = PrivateRedis().start()
    store = make_store(server.url, unique_prefix("frozen"), failures=3, reset=5)
    try:
        await store.epoch()
        server.freeze()
        started = time.perf_counter()
        for _ in range(10):
            with pytest.raises(StoreUnavailable):
                await store.lookup("j", "s")
        # Three timeouts (0.25 s each) open the breaker; the other seven fail at once.
        assert time.perf_counter() - started < 2.5
        assert store.breaker_state == "open"
    finally:
        server.thaw()
        await store.close()
        server.close()
