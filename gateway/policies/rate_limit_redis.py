"""Rate-limit buckets shared by every gateway instance through Redis: one atomic round trip.

The GCRA step (see :mod:`gateway.policies.buckets`) runs as a Lua script with Redis's own clock
(``TIME``), so instances with skewed clocks still share one limit; the script reads, decides and
writes one key atomically and sets its expiry to the moment the bucket is full again. redis-py
sends it with ``EVALSHA`` (falling back to ``EVAL`` once after a Redis restart).

A Redis that fails or times out must not cost every request a timeout: after an error the
store is skipped for ``retry_seconds`` and the policy's fallback decides (local buckets by
default), counted in ``doma_gateway_policy_fallbacks_total``. Clients come from the same URL
forms as the revocation store (``redis://``, ``rediss://``, ``unix://``, sentinel, cluster).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from authz.revocation_redis import RedisClient, redis_client
from gateway.policies.buckets import Verdict

__all__ = ["RedisBuckets", "SharedRedis"]

log = logging.getLogger("doma.gateway.rate_limit")

_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, string.format('%.0f', tat - now), string.format('%.0f', allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((tolerance - (new_tat - now)) / interval + 0.000001)
return {1, remaining, string.format('%.0f', new_tat - now), '0'}
"""


class SharedRedis:
    """One client and one registered script per Redis URL, shared by every limit using it."""

    def __init__(self, url: str, timeout: float):
        self.url = url
        self.client: RedisClient = redis_client(url, timeout)
        self.script: Any = self.client.register_script(_GCRA)

    async def aclose(self) -> None:
        await self.client.aclose()


class RedisBuckets:
    __slots__ = ("_down_until", "_interval_us", "_prefix", "_redis", "_retry", "_tolerance_us")

    def __init__(
        self,
        redis: SharedRedis,
        prefix: str,
        interval: float,
        tolerance: float,
        *,
        retry_seconds: float = 1.0,
    ):
        self._redis = redis
        self._prefix = prefix
        self._interval_us = round(interval * 1_000_000)
        self._tolerance_us = round(tolerance * 1_000_000)
        if self._interval_us < 1:
            # The script would divide by zero and allow everything (the loader refuses these).
            raise ValueError(f"an interval of {interval} s is under the script's microsecond")
        self._retry = retry_seconds
        self._down_until = 0.0

    async def take(self, key: str) -> Verdict | None:
        """The verdict, or None when Redis cannot answer now (the caller falls back)."""
        if self._down_until and time.monotonic() < self._down_until:
            return None
        try:
            allowed, remaining, reset, retry = await self._redis.script(
                keys=[self._prefix + key], args=[self._interval_us, self._tolerance_us]
            )
        except Exception as exc:  # connection, timeout, redis-py's errors: all mean "no answer"
            self._failed(exc)
            return None
        self._down_until = 0.0
        return Verdict(bool(allowed), int(remaining), int(reset) / 1e6, int(retry) / 1e6)

    def _failed(self, exc: BaseException) -> None:
        if not self._down_until:
            log.warning(
                "rate-limit store unavailable; using the fallback",
                extra={"error": type(exc).__name__, "retry_seconds": self._retry},
            )
        self._down_until = time.monotonic() + self._retry
