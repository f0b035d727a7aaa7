"""The Redis revocation store (redis-py asyncio), behind a circuit breaker.

Key layout (``P`` is ``key_prefix``, default ``doma:revocation``)::

    {P}:jti:<jti>    "<exp>"     expires at the token's exp plus the issuers' leeway (EXAT)
    {P}:sub:<sub>    "<before>"  tokens of <sub> issued before <before> are revoked; EX subject_ttl
                                 (from <before> when it lies ahead)
    {P}:epoch        counter     bumped by every revoke, never expires

The braces are a Redis Cluster hash tag: every key lives in one slot, so the revoke scripts
(write + bump the epoch, atomically) and the two-key lookup work unchanged on a cluster. The
revocation set is small (live tokens only), so one slot is no capacity limit.

A dead Redis must not cost every check a timeout: after ``failures`` consecutive errors the
breaker opens and calls fail at once for ``reset`` seconds, then one call probes. Pooled
connections are dropped on every error, because after a Redis restart each stale connection
would otherwise fail once more and flap the breaker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pybreaker
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from authz.errors import StoreUnavailable
from authz.revocation import Lookup
from authz.revocation_urls import parse_redis_url

__all__ = ["RedisClient", "RedisStore", "close_client", "redis_client", "store_keys"]

RedisClient = Redis | RedisCluster
_T = TypeVar("_T")
_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)

# Write the jti with an absolute expiry, bump the epoch: one atomic step. Of two revocations of
# one jti the later expiry stands: a second revoke never shortens the first.
_REVOKE_JTI_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
end
return redis.call('INCR', KEYS[2])
"""
# Keep the later "before" of two subject revocations, for as long as either asked.
_REVOKE_SUBJECT_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local keep = math.max(tonumber(ARGV[2]), redis.call('TTL', KEYS[1]))
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', keep)
else
  redis.call('EXPIRE', KEYS[1], keep)
end
return redis.call('INCR', KEYS[2])
"""


def store_keys(prefix: str) -> tuple[str, str, str]:
    """The jti key prefix, the subject key prefix and the epoch key for ``prefix``."""
    tag = "{" + prefix + "}"
    return f"{tag}:jti:", f"{tag}:sub:", f"{tag}:epoch"


def redis_client(url: str, timeout: float) -> RedisClient:
    """A client for any of the URL forms in :mod:`authz.revocation_urls`.

    No retries inside the client: a refused connection must fail in one round trip and let the
    breaker decide, not back off for seconds per request.
    """
    parsed = parse_redis_url(url)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "username": parsed.username,
        "password": parsed.password,
    }
    if parsed.kind == "single":
        assert parsed.url is not None
        return Redis.from_url(
            parsed.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
    if parsed.kind == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
            retry=Retry(NoBackoff(), 0),
            **common,
        )
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.nodes),
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        **common,
    )
    master: Redis = sentinel.master_for(parsed.service, db=parsed.db, retry=Retry(NoBackoff(), 0))
    return master


async def close_client(client: RedisClient) -> None:
    """Close ``client`` and, for a Sentinel master client, its connections to the sentinels."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


class RedisStore:
    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str,
        timeout: float,
        breaker: pybreaker.CircuitBreaker,
    ):
        self._client = client
        self._jti_prefix, self._subject_prefix, self._epoch_key = store_keys(key_prefix)
        # Socket timeouts bound each read; this bounds a whole call (connect, retries, reads).
        self._deadline = timeout * 2
        self._breaker = breaker

    @property
    def breaker_state(self) -> str:
        return str(self._breaker.current_state)

    def healthy(self) -> bool:
        return self.breaker_state != "open"

    async def revoke_token(self, jti: str, expires_at: float) -> int:
        keys = (self._jti_prefix + jti, self._epoch_key)
        stamp = str(int(expires_at))
        result = await self._call(lambda: self._eval(_REVOKE_JTI_SCRIPT, keys, (stamp, stamp)))
        return int(result)

    async def revoke_subject(self, subject: str, before: float, keep_seconds: float) -> int:
        keys = (self._subject_prefix + subject, self._epoch_key)
        args = (repr(float(before)), str(max(int(keep_seconds), 1)))
        return int(await self._call(lambda: self._eval(_REVOKE_SUBJECT_SCRIPT, keys, args)))

    async def lookup(self, jti: str | None, subject: str | None) -> Lookup:
        keys = []
        if jti is not None:
            keys.append(self._jti_prefix + jti)
        if subject is not None:
            keys.append(self._subject_prefix + subject)
        values: list[bytes | str | None] = await self._call(lambda: self._client.mget(keys))
        revoked = jti is not None and values[0] is not None
        raw_before = values[-1] if subject is not None else None
        return Lookup(revoked, float(raw_before) if raw_before is not None else 0.0)

    async def epoch(self) -> int:
        value = await self._call(lambda: self._client.get(self._epoch_key))
        return int(value) if value is not None else 0

    async def close(self) -> None:
        await close_client(self._client)

    def _eval(self, script: str, keys: tuple[str, ...], args: tuple[str, ...]) -> Awaitable[Any]:
        return self._client.eval(script, len(keys), *keys, *args)

    async def _call(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        try:
            with self._breaker.calling():
                async with asyncio.timeout(self._deadline):
                    return await operation()
        except pybreaker.CircuitBreakerError as exc:
            await self._drop_connections()
            raise StoreUnavailable("revocation store unavailable (circuit breaker open)") from exc
        except _FAILURES as exc:
            await self._drop_connections()
            raise StoreUnavailable(f"revocation store unavailable ({type(exc).__name__})") from exc

    async def _drop_connections(self) -> None:
        client = self._client
        try:
            if isinstance(client, Redis):
                # Idle connections only: one call past its deadline must not cut the calls in
                # flight on other connections (redis-py drops a connection whose read it cancels).
                await client.connection_pool.disconnect(inuse_connections=False)
        except _FAILURES:
            return
