"""The composition root's revocation stack: readiness as configured, metrics exported."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest

from authz.settings import RevocationSettings
from doma_gateway.revocation import build_revocation


async def eventually(condition) -> None:  # type: ignore[no-untyped-def]
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def test_readiness_follows_the_store_and_the_bus_as_configured():
    settings = RevocationSettings(
        store="memory://", bus="memory://", readiness=("store", "bus"), epoch_check_interval=0.05
    )
    stack = build_revocation(settings, retention_margin=0)
    assert not stack.ready()  # nothing checked yet
    task = asyncio.create_task(stack.run())
    try:
        await eventually(stack.ready)
        stack.cache.bus_connected_changed(False)
        assert not stack.ready()
        only_store = build_revocation(
            RevocationSettings(readiness=("store",), epoch_check_interval=0.05), retention_margin=0
        )
        only_store.cache.epoch_checked(0)
        assert only_store.ready() and not only_store.cache.bus_connected
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_every_revocation_metric_is_exported():
    registry = CollectorRegistry()
    stack = build_revocation(
        RevocationSettings(store="memory://m1", bus="memory://m1", epoch_check_interval=0.05),
        retention_margin=0,
        registry=registry,
    )
    task = asyncio.create_task(stack.run())
    try:
        await eventually(lambda: stack.cache.bus_connected and stack.cache.store_healthy)
        await stack.cache.check({"jti": "a", "sub": "s", "iat": 1})
        await stack.cache.check({"jti": "a", "sub": "s", "iat": 1})
        await stack.revoker.revoke_token("a", time.time() + 60)
        text = generate_latest(registry).decode()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for name in (
        'doma_authz_revocation_cache_lookups_total{result="hit"} 1.0',
        "doma_authz_revocation_cache_hit_ratio 0.5",
        "doma_authz_revocations_applied_total 1.0",
        "doma_authz_revocation_events_received_total",
        'doma_authz_revocation_cache_flushes_total{cause="bus_connected"}',
        "doma_authz_revocation_store_errors_total 0.0",
        "doma_authz_revocation_bus_connected 1.0",
        'doma_authz_revocation_store_breaker_state{state="closed"} 1.0',
        "doma_authz_revocation_epoch",
        'doma_authz_revocation_propagation_seconds_count{kind="jti"} 1.0',
    ):
        assert name in text, name
