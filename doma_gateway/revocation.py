"""Wires revocation: the store and bus chosen by URL, the local cache, the revoker and metrics.

The only place that knows the concrete store and bus classes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import pybreaker
from prometheus_client import CollectorRegistry

from authz.bus_amqp import AmqpBus
from authz.bus_redis import RedisPubSubBus
from authz.revocation import InvalidationBus, RevocationStore
from authz.revocation_cache import RevocationCache, follow_bus, watch_epoch
from authz.revocation_memory import memory_bus, memory_store
from authz.revocation_metrics import RevocationMetrics
from authz.revocation_redis import RedisStore, redis_client
from authz.revoker import Revoker
from authz.settings import RevocationSettings

__all__ = ["RevocationStack", "build_bus", "build_revocation", "build_store"]


@dataclass(slots=True)
class RevocationStack:
    settings: RevocationSettings
    store: RevocationStore
    bus: InvalidationBus
    cache: RevocationCache
    revoker: Revoker
    breaker_state: Callable[[], str]

    async def run(self) -> None:
        """Follow the bus and check the epoch until cancelled."""
        settings = self.settings
        async with asyncio.TaskGroup() as group:
            group.create_task(
                follow_bus(
                    self.bus,
                    self.cache,
                    initial_backoff=settings.reconnect_initial,
                    max_backoff=settings.reconnect_max,
                )
            )
            group.create_task(watch_epoch(self.store, self.cache, settings.epoch_check_interval))

    def ready(self) -> bool:
        wanted = self.settings.readiness
        if "store" in wanted and not self.cache.store_healthy:
            return False
        return not ("bus" in wanted and not self.cache.bus_connected)

    async def close(self) -> None:
        await self.bus.close()
        await self.store.close()


def build_store(settings: RevocationSettings) -> tuple[RevocationStore, Callable[[], str]]:
    """The store for ``settings.store`` and a function telling its breaker's state."""
    scheme = settings.store.partition("://")[0]
    if scheme == "memory":
        return memory_store(settings.store.partition("://")[2]), lambda: "closed"
    breaker = pybreaker.CircuitBreaker(
        fail_max=settings.breaker_failures,
        reset_timeout=settings.breaker_reset,
        name="revocation-store",
    )
    store = RedisStore(
        redis_client(settings.store, settings.store_timeout),
        key_prefix=settings.key_prefix,
        timeout=settings.store_timeout,
        breaker=breaker,
    )
    return store, lambda: store.breaker_state


def build_bus(settings: RevocationSettings, name: str = "") -> InvalidationBus:
    scheme = settings.bus.partition("://")[0]
    if scheme == "memory":
        return memory_bus(settings.bus.partition("://")[2])
    # Connecting may take a TCP and a protocol handshake: give it more than one store call.
    timeout = max(settings.store_timeout * 8, 2.0)
    if scheme in ("amqp", "amqps"):
        # aiormq logs every lost connection as an error with a traceback; the bus loop logs the
        # same event once, as a warning with its cause, and reconnects.
        logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
        return AmqpBus(
            settings.bus,
            key_prefix=settings.key_prefix,
            timeout=timeout,
            heartbeat=settings.bus_heartbeat,
            name=name or f"doma-gateway {socket.gethostname()} pid {os.getpid()}",
        )
    return RedisPubSubBus(
        settings.bus,
        key_prefix=settings.key_prefix,
        timeout=timeout,
        heartbeat=settings.bus_heartbeat,
    )


def build_revocation(
    settings: RevocationSettings,
    *,
    retention_margin: float,
    registry: CollectorRegistry | None = None,
) -> RevocationStack:
    """Everything revocation needs in one process; ``retention_margin`` is the largest leeway."""
    store, breaker_state = build_store(settings)
    bus = build_bus(settings)
    metrics = RevocationMetrics(registry) if registry is not None else None
    cache = RevocationCache(
        store,
        cache=settings.cache,
        on_store_error=settings.on_store_error,
        on_applied=metrics.applied if metrics is not None else None,
    )
    if metrics is not None:
        metrics.watch(cache, breaker_state)
    revoker = Revoker(
        store,
        bus,
        subject_ttl=settings.subject_ttl,
        retention_margin=retention_margin,
        # This instance applies its own revokes at once, before the bus echoes them back.
        on_revoked=cache.apply,
    )
    return RevocationStack(settings, store, bus, cache, revoker, breaker_state)
