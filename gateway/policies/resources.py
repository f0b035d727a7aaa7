"""What chains share across routes and reloads: the authorizer, clients, buckets, metrics.

Built once by the composition root. A reload builds new chains from the same resources, so
rate-limit buckets, Redis clients and ext-authz channels survive it (a bucket is reused when
its owner and limit are unchanged).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from authz.inter_domain import InterDomainRule
from gateway.policies.auth import Authorizer, ExtAuthzSettings
from gateway.policies.buckets import LocalBuckets
from gateway.policies.client_ip import ClientAddress
from gateway.policies.metrics import PolicyMetrics

if TYPE_CHECKING:
    # Imported where first used: a gateway without ext-authz never loads the gRPC client.
    from gateway.policies.ext_authz import ExtAuthzClient
    from gateway.policies.rate_limit_redis import SharedRedis

__all__ = ["PolicyResources"]


class PolicyResources:
    def __init__(
        self,
        *,
        authorizer: Authorizer | None = None,
        identity_headers: Iterable[str] = (),
        metrics: PolicyMetrics | None = None,
        inter_domain: InterDomainRule | None = None,
    ):
        self.authorizer = authorizer
        self.identity_headers = tuple(h.lower() for h in identity_headers)
        self.metrics = metrics or PolicyMetrics(CollectorRegistry())
        # The layer rule (inter_domain:); a reload replaces it with one for the new domains.
        self.inter_domain = inter_domain
        self._addresses: dict[tuple[str, ...], ClientAddress] = {}
        self._buckets: dict[tuple[str, float, float], LocalBuckets] = {}
        self._redis: dict[tuple[str, float], SharedRedis] = {}
        self._ext_authz: dict[ExtAuthzSettings, ExtAuthzClient] = {}

    @property
    def identity_spellings(self) -> tuple[bytes, ...]:
        """Every identity header in its dash and underscore spellings, as header bytes."""
        names: dict[bytes, None] = {}
        for header in self.identity_headers:
            names[header.encode()] = None
            names[header.replace("-", "_").encode()] = None
        return tuple(names)

    def client_address(self, trusted: tuple[str, ...]) -> ClientAddress:
        found = self._addresses.get(trusted)
        if found is None:
            found = self._addresses[trusted] = ClientAddress(trusted)
        return found

    def local_buckets(self, namespace: str, interval: float, tolerance: float) -> LocalBuckets:
        key = (namespace, interval, tolerance)
        found = self._buckets.get(key)
        if found is None:
            found = self._buckets[key] = LocalBuckets(interval, tolerance)
        return found

    def redis(self, url: str, timeout: float) -> SharedRedis:
        from gateway.policies.rate_limit_redis import SharedRedis

        found = self._redis.get((url, timeout))
        if found is None:
            found = self._redis[(url, timeout)] = SharedRedis(url, timeout)
        return found

    def ext_authz_client(self, settings: ExtAuthzSettings) -> ExtAuthzClient:
        from gateway.policies.ext_authz import ExtAuthzClient

        found = self._ext_authz.get(settings)
        if found is None:
            found = self._ext_authz[settings] = ExtAuthzClient(settings)
        return found

    async def aclose(self) -> None:
        for redis in self._redis.values():
            with contextlib.suppress(Exception):
                await redis.aclose()
        for channel in self._ext_authz.values():
            with contextlib.suppress(Exception):
                await channel.aclose()
