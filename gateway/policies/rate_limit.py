"""Rate limits: GCRA buckets per user, client address, route or header, local or in Redis.

Answers carry the IETF draft's headers (draft-ietf-httpapi-ratelimit-headers):
``RateLimit-Policy: "name";q=<requests>;w=<period>`` and ``RateLimit: "name";r=<remaining>;
t=<seconds until full>``; a refusal is 429 ``rate_limited`` with ``Retry-After``. With a Redis
``store`` every instance shares the buckets; when Redis cannot answer, ``on_store_error``
decides: ``local`` (this instance's own buckets, the default), ``allow`` or ``deny`` (503).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter

from authz.revocation_urls import url_problem
from authz.yamlnodes import Node
from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.policies.auth import CLAIMS
from gateway.policies.buckets import LocalBuckets, Verdict
from gateway.policies.client_ip import ClientAddress
from gateway.policies.denial import Denial
from gateway.policies.rate_limit_redis import RedisBuckets
from gateway.policies.response_headers import SCOPE_KEY as RESPONSE_HEADERS
from gateway.policies.spec import ChainContext, PolicySpec, header_name

__all__ = ["SPEC", "RateLimitPolicy", "RateLimitSettings"]

LimitBy = Literal["user", "client_ip", "route", "header"]
OnStoreError = Literal["local", "allow", "deny"]
_KEYS = (
    "name",
    "requests",
    "period_seconds",
    "burst",
    "limit_by",
    "header_name",
    "store",
    "key_prefix",
    "store_timeout_seconds",
    "on_store_error",
    "headers",
)
_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
_MICROSECONDS = 1_000_000


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    requests: int
    period: float
    burst: int
    limit_by: LimitBy = "client_ip"
    header_name: str | None = None
    # "local", or a Redis URL (the revocation store's forms).
    store: str = "local"
    key_prefix: str = "doma:ratelimit"
    store_timeout: float = 0.05
    on_store_error: OnStoreError = "local"
    name: str = "default"
    headers: bool = True

    @property
    def interval(self) -> float:
        return self.period / self.requests

    @property
    def tolerance(self) -> float:
        return self.burst * self.interval


def parse(node: Node | None, item: Node) -> RateLimitSettings:
    if node is None:
        raise item.error("rate_limit needs settings, e.g. - rate_limit: {requests: 100}")
    m = node.mapping(_KEYS)
    requests_node = m.require("requests")
    requests = requests_node.int(minimum=1, maximum=10_000_000)
    period_node = m.get("period_seconds")
    period = period_node.float(minimum=0.001, maximum=86_400) if period_node else 1.0
    most = math.floor(period * _MICROSECONDS + 1e-6)
    if requests > most:
        # The shared store counts in Redis's microseconds: a shorter interval rounds to none,
        # and every request would pass. Local buckets keep the same bound, so a limit means the
        # same whichever store holds it.
        raise requests_node.error(
            f"requests {requests} per period_seconds {period:g} is more than one request per "
            f"microsecond, finer than a bucket counts (at most {most} per {period:g} s)"
        )
    burst_node = m.get("burst")
    burst = burst_node.int(minimum=1, maximum=10_000_000) if burst_node else requests
    by_node = m.get("limit_by")
    limit_by = by_node.choice(("user", "client_ip", "route", "header")) if by_node else "client_ip"
    header_node = m.get("header_name")
    header = header_name(header_node) if header_node else None
    if limit_by == "header" and header is None:
        raise node.error("limit_by: header needs header_name (e.g. header_name: x-api-key)")
    if header is not None and limit_by != "header":
        raise m.key("header_name").error("header_name applies only to limit_by: header")
    store_node = m.get("store")
    store = store_node.str() if store_node else "local"
    if store != "local" and store_node is not None:
        problem = url_problem(store, _REDIS_SCHEMES)
        if problem:
            raise store_node.error(f"store must be 'local' or a Redis URL: {problem}")
    name_node = m.get("name")
    name = name_node.str() if name_node else "default"
    if not name.replace("-", "").replace("_", "").isalnum():
        raise name_node.error(f"name {name!r}: letters, digits, '-' and '_' only")  # type: ignore[union-attr]
    prefix = m.get("key_prefix")
    timeout = m.get("store_timeout_seconds")
    on_error = m.get("on_store_error")
    headers = m.get("headers")
    return RateLimitSettings(
        requests=requests,
        period=period,
        burst=burst,
        limit_by=limit_by,  # type: ignore[arg-type]
        header_name=header,
        store=store,
        key_prefix=prefix.str() if prefix else "doma:ratelimit",
        store_timeout=timeout.float(minimum=0.001, maximum=10) if timeout else 0.05,
        on_store_error=on_error.choice(("local", "allow", "deny")) if on_error else "local",  # type: ignore[arg-type]
        name=name,
        headers=headers.bool() if headers is not None else True,
    )


class RateLimitPolicy:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: RateLimitSettings,
        local: LocalBuckets,
        shared: RedisBuckets | None,
        client_address: ClientAddress,
        limited: Denial,
        unavailable: Denial,
        fallbacks: Counter,
    ):
        self.app = app
        self._settings = settings
        self._local = local
        self._shared = shared
        self._address = client_address
        self._limited = limited
        self._unavailable = unavailable
        self._fallbacks = fallbacks
        self._by = settings.limit_by
        self._header = settings.header_name.encode() if settings.header_name else b""
        self._headers = settings.headers
        self._policy_header = (
            b"ratelimit-policy",
            f'"{settings.name}";q={settings.requests};w={_seconds(settings.period)}'.encode(),
        )
        # Formatted per answer: remaining falls with every request a client makes, so a cache of
        # these values would miss nearly every time, and a miss cost twice the formatting.
        self._state_format = f'"{settings.name}";r=%d;t=%d'.encode()

    def _key(self, scope: Scope) -> str:
        by = self._by
        if by == "route":
            return "route"
        if by == "user":
            claims = scope.get(CLAIMS)
            subject = claims.get("sub") if claims is not None else None
            if isinstance(subject, str) and subject:
                return "user:" + subject
        elif by == "header":
            value: bytes
            for name, value in scope["headers"]:
                if name == self._header:
                    return "header:" + value.decode("latin-1")
        # No user (bypassed route) or no such header: the client address stands in.
        return "ip:" + self._address.of(scope)

    async def _shared_verdict(self, shared: RedisBuckets, key: str) -> Verdict | None:
        verdict = await shared.take(key)
        if verdict is not None:
            return verdict
        self._fallbacks.inc()
        mode = self._settings.on_store_error
        if mode == "local":
            return self._local.take(key)
        if mode == "allow":
            return Verdict(True, self._settings.burst, 0.0, 0.0)
        return None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        shared = self._shared
        if shared is not None:
            return self._shared_then_pass(shared, scope, receive, send)
        # Local buckets answer at once: the request goes on without a coroutine of this policy.
        return self._pass(self._local.take(self._key(scope)), scope, receive, send)

    async def _shared_then_pass(
        self, shared: RedisBuckets, scope: Scope, receive: Receive, send: Send
    ) -> None:
        verdict = await self._shared_verdict(shared, self._key(scope))
        await self._pass(verdict, scope, receive, send)

    def _pass(
        self, verdict: Verdict | None, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        """The request on to the next app with the limit's headers, or its refusal."""
        if verdict is None:
            return self._unavailable.send(send, scope["doma.request_id"])
        if not verdict.allowed:
            retry = (b"retry-after", str(max(1, math.ceil(verdict.retry_after))).encode())
            return self._limited.send(
                send, scope["doma.request_id"], (retry, self._policy_header, self._state(verdict))
            )
        if not self._headers:
            return self.app(scope, receive, send)
        scope[RESPONSE_HEADERS].extend((self._policy_header, self._state(verdict)))
        return self.app(scope, receive, send)

    def _state(self, verdict: Verdict) -> tuple[bytes, bytes]:
        return (b"ratelimit", self._state_format % (verdict.remaining, _seconds(verdict.reset)))


def _seconds(value: float) -> int:
    # Not max(): the builtin parses keyword arguments on every call, and this runs per request.
    seconds = math.ceil(value - 1e-9)
    return seconds if seconds > 0 else 0


def build(app: ASGIApp, settings: RateLimitSettings, context: ChainContext) -> ASGIApp:
    resources = context.resources
    namespace = f"{settings.name}:{context.owner}"
    local = resources.local_buckets(namespace, settings.interval, settings.tolerance)
    shared = None
    if settings.store != "local":
        shared = RedisBuckets(
            resources.redis(settings.store, settings.store_timeout),
            f"{settings.key_prefix}:{namespace}:",
            settings.interval,
            settings.tolerance,
        )
    metrics = resources.metrics
    return RateLimitPolicy(
        app,
        settings=settings,
        local=local,
        shared=shared,
        client_address=resources.client_address(context.gateway.trusted_proxies),
        limited=Denial(metrics, "rate_limit", 429, "rate_limited"),
        unavailable=Denial(metrics, "rate_limit", 503, "rate_limit_store_unavailable"),
        fallbacks=metrics.fallback("rate_limit", f"store_unavailable_{settings.on_store_error}"),
    )


SPEC = PolicySpec(parse=parse, build=build)
