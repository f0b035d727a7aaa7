"""The Redis Pub/Sub invalidation bus.

Channel: ``<key_prefix>:events``. Pub/Sub has no heartbeat of its own, so the subscription pings
the server whenever it has been idle for ``heartbeat`` seconds; a connection that stops answering
fails within about two heartbeats. Lost messages are caught by the store's epoch anyway.

On Redis Cluster, ``PUBLISH`` reaches every node, so the subscription listens on the first node
of the URL that answers. On Sentinel it follows the current master.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from authz.errors import BusError
from authz.revocation_redis import RedisClient, close_client, redis_client
from authz.revocation_urls import parse_redis_url

__all__ = ["RedisPubSubBus", "event_channel"]

_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


def event_channel(key_prefix: str) -> str:
    return f"{key_prefix}:events"


class RedisPubSubBus:
    def __init__(self, url: str, *, key_prefix: str, timeout: float, heartbeat: float):
        self._url = url
        self._channel = event_channel(key_prefix)
        self._timeout = timeout
        self._heartbeat = heartbeat
        self._publisher: RedisClient | None = None

    async def publish(self, payload: bytes) -> None:
        if self._publisher is None:
            self._publisher = redis_client(self._url, self._timeout)
        try:
            async with asyncio.timeout(self._timeout * 2):
                await self._publisher.publish(self._channel, payload)
        except _FAILURES as exc:
            raise BusError(f"publish failed ({type(exc).__name__})") from exc

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[bytes]]:
        client, pubsub = await self._subscribed()
        try:
            yield self._messages(pubsub)
        finally:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await close_client(client)
            except _FAILURES:
                pass

    async def _subscribed(self) -> tuple[Redis, PubSub]:
        last: Exception | None = None
        for client in self._subscriber_clients():
            pubsub = client.pubsub()
            try:
                async with asyncio.timeout(self._timeout * 4):
                    await pubsub.subscribe(self._channel)
                    # Wait for the server's confirmation: only then are events delivered.
                    while True:
                        message = await pubsub.get_message(timeout=self._timeout)
                        if message is not None and message["type"] == "subscribe":
                            return client, pubsub
            except _FAILURES as exc:
                last = exc
                await _quietly_close(pubsub, client)
        raise BusError(f"cannot subscribe ({type(last).__name__})") from last

    def _subscriber_clients(self) -> list[Redis]:
        parsed = parse_redis_url(self._url)
        options: dict[str, Any] = {
            "socket_connect_timeout": self._timeout,
            # Reads wait for events: the heartbeat, not a socket timeout, detects a dead peer.
            "socket_timeout": None,
            "health_check_interval": self._heartbeat,
            "retry": Retry(NoBackoff(), 0),
        }
        if parsed.kind == "single":
            assert parsed.url is not None
            return [Redis.from_url(parsed.url, **options)]
        options.update(username=parsed.username, password=parsed.password)
        if parsed.kind == "cluster":
            return [Redis(host=host, port=port, **options) for host, port in parsed.nodes]
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(parsed.nodes),
            sentinel_kwargs={
                "socket_timeout": self._timeout,
                "socket_connect_timeout": self._timeout,
            },
        )
        master: Redis = sentinel.master_for(parsed.service, db=parsed.db, **options)
        return [master]

    async def _messages(self, pubsub: PubSub) -> AsyncIterator[bytes]:
        while True:
            try:
                # A bounded wait, so the health-check ping runs even when nothing is published.
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self._heartbeat
                )
            except _FAILURES as exc:
                raise BusError(f"subscription lost ({type(exc).__name__})") from exc
            if message is not None and message["type"] == "message":
                data = message["data"]
                yield data if isinstance(data, bytes) else str(data).encode()

    async def close(self) -> None:
        if self._publisher is not None:
            await close_client(self._publisher)
            self._publisher = None


async def _quietly_close(pubsub: PubSub, client: Redis | RedisCluster) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await close_client(client)
    except _FAILURES:
        return
