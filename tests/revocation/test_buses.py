"""The RabbitMQ and Redis Pub/Sub buses against real brokers, including lost connections."""

from __future__ import annotations

import asyncio
import time

import pytest

from authz.bus_amqp import AmqpBus
from authz.bus_redis import RedisPubSubBus
from authz.revocation_cache import RevocationCache, follow_bus
from authz.revocation_memory import MemoryStore
from authz.settings import RevocationCacheSettings
from tests.support.services import PrivateRabbit, PrivateRedis, unique_prefix


def amqp(url: str, prefix: str) -> AmqpBus:
    return AmqpBus(url, key_prefix=prefix, timeout=5, heartbeat=1, name="doma-gateway test")


def redis_bus(url: str, prefix: str) -> RedisPubSubBus:
    return RedisPubSubBus(url, key_prefix=prefix, timeout=1, heartbeat=1)


async def until(condition, within: float = 20.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.mark.parametrize("kind", ["amqp", "redis"])
async def test_every_subscriber_gets_every_event(kind, amqp_url, redis_url):
    prefix = unique_prefix(f"fanout-{kind}")
    make = (
        (lambda: amqp(amqp_url, prefix))
        if kind == "amqp"
        else (lambda: redis_bus(redis_url, prefix))
    )
    buses = [make() for _ in range(3)]
    received: list[list[bytes]] = [[] for _ in buses]

    async def listen(bus, sink, ready):  # type: ignore[no-untyped-def]
        async with bus.subscribe() as payloads:
            ready.set()
            async for payload in payloads:
                sink.append(payload)

    readies = [asyncio.Event() for _ in buses]
    tasks = [
        asyncio.create_task(listen(b, s, r))
        for b, s, r in zip(buses, received, readies, strict=True)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 20)
        await buses[0].publish(b"one")
        await buses[1].publish(b"two")
        await until(lambda: all(len(r) == 2 for r in received))
        assert all(sorted(r) == [b"one", b"two"] for r in received)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for bus in buses:
            await bus.close()


async def test_closed_rabbitmq_connections_flush_the_cache_and_resubscribe():
    rabbit = PrivateRabbit().start()
    try:
        prefix = unique_prefix("amqp-drop")
        bus = amqp(rabbit.url, prefix)
        cache = RevocationCache(MemoryStore(), cache=RevocationCacheSettings())
        task = asyncio.create_task(follow_bus(bus, cache, initial_backoff=0.05, max_backoff=0.5))
        try:
            await until(lambda: cache.bus_connected)
            await asyncio.to_thread(rabbit.close_all_connections)
            await until(lambda: not cache.bus_connected, 5)
            assert cache.flushes.get("bus_lost") == 1
            await until(lambda: cache.bus_connected, 10)
            # Resubscribed: events flow again.
            publisher = amqp(rabbit.url, prefix)
            received = cache.events_received
            await publisher.publish(b'{"v":1}')
            await until(lambda: cache.events_received > received, 5)
            await publisher.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await bus.close()
    finally:
        await asyncio.to_thread(rabbit.close)


async def test_a_restarted_redis_drops_the_subscription_and_it_comes_back():
    server = PrivateRedis().start()
    try:
        bus = redis_bus(server.url, unique_prefix("pubsub-drop"))
        cache = RevocationCache(MemoryStore(), cache=RevocationCacheSettings())
        task = asyncio.create_task(follow_bus(bus, cache, initial_backoff=0.05, max_backoff=0.5))
        try:
            await until(lambda: cache.bus_connected)
            server.stop()
            await until(lambda: not cache.bus_connected, 5)
            server.start()
            await until(lambda: cache.bus_connected, 10)
            received = cache.events_received
            await bus.publish(b'{"v":1}')
            await until(lambda: cache.events_received > received, 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await bus.close()
    finally:
        server.close()
