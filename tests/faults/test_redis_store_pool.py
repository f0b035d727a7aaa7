"""One slow store call must not break the others: a timeout drops idle connections only.

Under load (the soak) a single revocation-store call that passed its deadline used to drop every
pooled connection, in-use ones included, so a concurrent revoke failed with ConnectionError and
the revocation API answered UNAVAILABLE although Redis was fine.
"""

from __future__ import annotations

import asyncio

import pybreaker
import pytest

from authz.errors import StoreUnavailable
from authz.revocation_redis import RedisStore, redis_client
from tests.support.services import PrivateRedis, unique_prefix

pytestmark = pytest.mark.faults


async def test_a_timed_out_call_does_not_break_calls_in_flight():
    redis = PrivateRedis().start()
    try:
        store = RedisStore(
            redis_client(redis.url, 0.25),
            key_prefix=unique_prefix("pool"),
            timeout=0.25,
            breaker=pybreaker.CircuitBreaker(fail_max=100),
        )
        client = store._client

        async def too_slow() -> None:
            # Passes the store's deadline (2 x 0.25 s) at 0.5 s.
            await store._call(lambda: asyncio.sleep(5))

        async def in_flight() -> object:
            # Holds a pooled connection from 0.45 s for 0.1-0.2 s (Redis times blocking calls out
            # at 10 Hz), across the other call's deadline, within its own socket timeout.
            await asyncio.sleep(0.45)
            return await store._call(lambda: client.blpop(["doma:nothing"], 0.1))

        results = await asyncio.gather(in_flight(), too_slow(), return_exceptions=True)
        assert results[0] is None, results[0]
        assert isinstance(results[1], StoreUnavailable)
        # The store still answers afterwards.
        assert await store.epoch() == 0
        await store.close()
    finally:
        redis.close()
