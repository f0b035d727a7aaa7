"""Key fetchers (adapters of :class:`authz.keys.KeyFetcher`) and the refresh loop.

- :class:`JwksUrlFetcher`: GET a JWKS URL with httpx; ``Cache-Control: max-age`` sets the TTL.
- :class:`JwksFileFetcher`: read a JWKS file (a mounted ConfigMap changes under us).
- :class:`PemFetcher`: one PEM key, from a file or inline text.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import httpx

from authz.errors import KeySourceError
from authz.keys import FetchedKeys, KeyCache, KeyFetcher, parse_jwks, parse_pem
from authz.settings import IssuerSettings

__all__ = [
    "JwksFileFetcher",
    "JwksUrlFetcher",
    "PemFetcher",
    "build_key_cache",
    "keep_keys_fresh",
]

log = logging.getLogger("doma.authz.keys")
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)
_MAX_JWKS_BYTES = 1 << 20


class JwksUrlFetcher:
    def __init__(self, url: str, client: httpx.AsyncClient, timeout: float):
        self.url = url
        self._client = client
        self._timeout = timeout

    async def fetch(self) -> FetchedKeys:
        try:
            # The timeout bounds the whole fetch: httpx's alone bounds each read, and a server
            # sending a byte at a time would hold the one fetch in flight for ever.
            async with asyncio.timeout(self._timeout):
                status, headers, body = await self._get()
        except (httpx.HTTPError, TimeoutError) as exc:
            raise KeySourceError(f"JWKS fetch failed: {type(exc).__name__}") from exc
        if status != 200:
            raise KeySourceError(f"JWKS fetch failed: HTTP {status}")
        return FetchedKeys(parse_jwks(body), _max_age(headers))

    async def _get(self) -> tuple[int, httpx.Headers, bytes]:
        """The answer, its body read only up to the size cap."""
        async with self._client.stream("GET", self.url, timeout=self._timeout) as response:
            if response.status_code != 200:
                return response.status_code, response.headers, b""
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > _MAX_JWKS_BYTES:
                    raise KeySourceError("JWKS document is larger than 1 MiB")
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)


def _max_age(headers: httpx.Headers) -> float | None:
    cache_control = headers.get("cache-control", "")
    if "no-store" in cache_control or "no-cache" in cache_control:
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


class JwksFileFetcher:
    def __init__(self, path: str):
        self.path = Path(path)

    async def fetch(self) -> FetchedKeys:
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
        except OSError as exc:
            raise KeySourceError(f"cannot read JWKS file: {exc.strerror}") from exc
        return FetchedKeys(parse_jwks(data))


class PemFetcher:
    def __init__(self, pem: bytes | Path, key_id: str | None):
        self._pem = pem
        self._key_id = key_id

    async def fetch(self) -> FetchedKeys:
        pem = self._pem
        if isinstance(pem, Path):
            try:
                pem = await asyncio.to_thread(pem.read_bytes)
            except OSError as exc:
                raise KeySourceError(f"cannot read public key file: {exc.strerror}") from exc
        return FetchedKeys(parse_pem(pem, self._key_id))


def build_key_cache(issuer: IssuerSettings, client: httpx.AsyncClient) -> KeyCache:
    source = issuer.keys
    fetcher: KeyFetcher
    if source.kind == "jwks_url":
        fetcher = JwksUrlFetcher(source.location, client, issuer.jwks_cache.timeout)
    elif source.kind == "jwks_file":
        fetcher = JwksFileFetcher(source.location)
    elif source.kind == "public_key_file":
        fetcher = PemFetcher(Path(source.location), source.key_id)
    else:
        fetcher = PemFetcher(source.location.encode(), source.key_id)
    policy = issuer.jwks_cache
    return KeyCache(
        issuer.issuer,
        fetcher,
        min_ttl=policy.min_ttl,
        max_ttl=policy.max_ttl,
        default_ttl=policy.default_ttl,
        refetch_min_interval=policy.refetch_min_interval,
    )


async def keep_keys_fresh(caches: Iterable[KeyCache], ready: asyncio.Event) -> None:
    """Load every issuer's keys, set ``ready`` once all have some, then refresh on schedule."""
    caches = list(caches)

    async def loop(cache: KeyCache) -> None:
        while True:
            failures = cache.failures
            await cache.refresh()  # never raises for a failed fetch: it keeps the last keys
            if cache.failures > failures:
                log.warning(
                    "key refresh failed", extra={"issuer": cache.issuer, "keys_kept": cache.ready}
                )
            if all(c.ready for c in caches):
                ready.set()
            await asyncio.sleep(cache.next_refresh_in())

    async with asyncio.TaskGroup() as group:
        for cache in caches:
            group.create_task(loop(cache))
