"""Prometheus metrics of the edge gateway.

Labelled children are cached per route and status, so a request pays two dictionary lookups
and two increments rather than a label resolution each.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BREAKER_STATES = {"closed": 0.0, "half-open": 1.0, "open": 2.0}


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self._requests = Counter(
            "doma_gateway_requests",
            "Requests by domain, version, route and response status.",
            ["domain", "version", "route", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            "doma_gateway_request_duration_seconds",
            "Time from request to response headers, by domain, version and route.",
            ["domain", "version", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._upstream_errors = Counter(
            "doma_gateway_upstream_errors",
            "Failed upstream attempts by upstream and reason.",
            ["upstream", "reason"],
            registry=registry,
        )
        self._retries = Counter(
            "doma_gateway_upstream_retries",
            "Retried upstream attempts.",
            ["upstream"],
            registry=registry,
        )
        self._breaker = Gauge(
            "doma_gateway_circuit_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
            ["upstream"],
            registry=registry,
            multiprocess_mode="max",
        )
        self._ejected = Gauge(
            "doma_gateway_upstream_ejected_endpoints",
            "Endpoints ejected by outlier detection.",
            ["upstream"],
            registry=registry,
            multiprocess_mode="max",
        )
        self._reloads = Counter(
            "doma_gateway_config_reloads",
            "Configuration reloads by result.",
            ["result"],
            registry=registry,
        )
        self._request_children: dict[tuple[str, str, str, int], Counter] = {}
        self._latency_children: dict[tuple[str, str, str], Histogram] = {}

    def request(self, domain: str, version: str, route: str, status: int, seconds: float) -> None:
        key = (domain, version, route, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(
                domain, version, route, str(status)
            )
        counter.inc()
        route_key = (domain, version, route)
        histogram = self._latency_children.get(route_key)
        if histogram is None:
            histogram = self._latency_children[route_key] = self._latency.labels(
                domain, version, route
            )
        histogram.observe(seconds)

    def upstream_error(self, upstream: str, reason: str) -> None:
        self._upstream_errors.labels(upstream, reason).inc()

    def retry(self, upstream: str) -> None:
        self._retries.labels(upstream).inc()

    def breaker_state(self, upstream: str, state: str) -> None:
        self._breaker.labels(upstream).set(_BREAKER_STATES.get(state, 0.0))

    def ejected(self, upstream: str, count: int) -> None:
        self._ejected.labels(upstream).set(count)

    def reload(self, result: str) -> None:
        self._reloads.labels(result).inc()
