"""The routes YAML as frozen, typed objects: parsed once, never mutated; a reload builds anew.

Vocabulary follows Envoy: an *upstream* (cluster) has *endpoints*; a *route* belongs to a
*version* of a *domain*, and domains sit in ordered *layers*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "IDEMPOTENT_METHODS",
    "AuthMode",
    "Backoff",
    "CircuitBreakerSettings",
    "Domain",
    "GatewaySettings",
    "LoadBalancing",
    "OutlierDetection",
    "PolicyRef",
    "RetryPolicy",
    "Rewrite",
    "Route",
    "RoutesConfig",
    "Timeouts",
    "Upstream",
    "Version",
]

LoadBalancing = Literal["round_robin", "least_outstanding"]
AuthMode = Literal["required", "bypass"]
# RFC 9110 9.2.2: a repeated idempotent request has the same effect, so only these are retried
# unless a route's upstream asks for more.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``total`` bounds the whole exchange up to the response headers, retries included."""

    connect: float = 1.0
    read: float = 15.0
    total: float = 30.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: sleep uniform(0, min(max, base * 2**retry))."""

    base: float = 0.025
    max: float = 0.25


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 0
    methods: frozenset[str] = IDEMPOTENT_METHODS
    on_status: frozenset[int] = frozenset({502, 503, 504})
    on_connect_failure: bool = True
    on_timeout: bool = False
    backoff: Backoff = Backoff()
    # Envoy's retry budget: retries in flight may be at most this share of active requests,
    # but never fewer than ``budget_min_concurrency`` (so a quiet upstream can still retry).
    budget_ratio: float = 0.2
    budget_min_concurrency: int = 3


@dataclass(frozen=True, slots=True)
class CircuitBreakerSettings:
    failures: int = 5
    reset_seconds: float = 10.0
    on_status: frozenset[int] = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_failures: int = 5
    ejection_seconds: float = 30.0
    max_ejected_percent: int = 50


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    endpoints: tuple[str, ...]
    load_balancing: LoadBalancing = "round_robin"
    timeouts: Timeouts = Timeouts()
    retries: RetryPolicy = RetryPolicy()
    circuit_breaker: CircuitBreakerSettings | None = CircuitBreakerSettings()
    outlier_detection: OutlierDetection | None = OutlierDetection()
    max_connections: int = 256
    # Envoy's circuit-breaker threshold ``max_requests``: requests in flight to this upstream
    # (per process) beyond which new ones are refused at once with 503 and Retry-After.
    max_requests: int = 1024
    preserve_host: bool = False
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Replace the matched domain prefix (``/api/{version}/{domain}``) or the whole path."""

    prefix: str | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """One entry of a route's ``policies:`` list: a policy name and its settings, in YAML order."""

    name: str
    settings: Any = field(default=None, compare=False)
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    upstream: str
    methods: frozenset[str] | None = None
    rewrite: Rewrite | None = None
    auth: AuthMode = "required"
    policies: tuple[PolicyRef, ...] = ()
    name: str = ""
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Version:
    name: str
    routes: tuple[Route, ...]
    deprecated: datetime | None = None
    sunset: datetime | None = None
    link: str | None = None
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    layer: str
    owner: str
    versions: tuple[Version, ...]
    default_version: str
    depends_on: tuple[str, ...] = ()
    # The domain's policy chain; each route's ``policies`` merge into it (see gateway.policies).
    policies: tuple[PolicyRef, ...] = ()
    source: str = field(default="", compare=False)

    def version(self, name: str) -> Version | None:
        for version in self.versions:
            if version.name == name:
                return version
        return None


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    listen: str = "0.0.0.0:8080"
    admin: str = "127.0.0.1:9901"
    # Peers whose X-Forwarded-For / -Proto we extend instead of replacing (CIDRs).
    trusted_proxies: tuple[str, ...] = ()
    # Bodies up to this size are read whole and sent with a Content-Length (and can be retried);
    # larger or unknown-length bodies stream through untouched.
    buffer_bytes: int = 65_536
    drain_seconds: float = 10.0
    transport: Literal["http1", "aiohttp", "httpcore"] = "http1"
    # One JSON line per request on stderr (off by default: it costs each request a log record).
    access_log: bool = False
    # What a client may send before any route sees it (gateway.http_protocol).
    max_request_head_bytes: int = 64 * 1024
    client_head_seconds: float = 30.0
    client_body_idle_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class RoutesConfig:
    layers: tuple[str, ...]
    domains: tuple[Domain, ...]
    upstreams: dict[str, Upstream]
    gateway: GatewaySettings = GatewaySettings()
    files: tuple[str, ...] = ()

    def domain(self, name: str) -> Domain | None:
        for domain in self.domains:
            if domain.name == name:
                return domain
        return None

    def only(self, name: str) -> RoutesConfig:
        """This config restricted to one domain and the upstreams its routes use."""
        domain = self.domain(name)
        if domain is None:
            known = ", ".join(d.name for d in self.domains)
            raise KeyError(f"no domain {name!r} (known: {known})")
        used = {route.upstream for version in domain.versions for route in version.routes}
        upstreams = {key: value for key, value in self.upstreams.items() if key in used}
        return RoutesConfig(self.layers, (domain,), upstreams, self.gateway, self.files)
