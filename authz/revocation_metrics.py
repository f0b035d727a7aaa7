"""Prometheus metrics of revocation: cache, bus, store and the revoke-to-apply latency.

Counters live as plain integers on :class:`RevocationCache` (the hot path pays nothing); the
collector reads them at scrape time. Only the latency histogram is observed as events arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from authz.revocation import RevocationEvent
from authz.revocation_cache import RevocationCache

__all__ = ["RevocationMetrics"]

_PROPAGATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BREAKER_STATES = ("closed", "half-open", "open")


class RevocationMetrics:
    def __init__(self, registry: CollectorRegistry):
        self._latency = Histogram(
            "doma_authz_revocation_propagation_seconds",
            "Time from a revoke being written to this instance applying it, by kind.",
            ["kind"],
            buckets=_PROPAGATION_BUCKETS,
            registry=registry,
        )
        self._registry = registry

    def applied(self, event: RevocationEvent, seconds: float) -> None:
        self._latency.labels(event.kind).observe(seconds)

    def watch(self, cache: RevocationCache, breaker_state: Callable[[], str]) -> None:
        self._registry.register(_RevocationCollector(cache, breaker_state))


class _RevocationCollector(Collector):
    def __init__(self, cache: RevocationCache, breaker_state: Callable[[], str]):
        self._cache = cache
        self._breaker_state = breaker_state

    def collect(self) -> Iterable[Metric]:
        cache = self._cache
        lookups = CounterMetricFamily(
            "doma_authz_revocation_cache_lookups",
            "Revocation lookups by result (hit: answered locally; miss: read the store).",
            labels=["result"],
        )
        lookups.add_metric(["hit"], cache.hits)
        lookups.add_metric(["miss"], cache.misses)
        total = cache.hits + cache.misses
        ratio = GaugeMetricFamily(
            "doma_authz_revocation_cache_hit_ratio", "Share of revocation lookups answered locally."
        )
        ratio.add_metric([], cache.hits / total if total else 0.0)
        applied = CounterMetricFamily(
            "doma_authz_revocations_applied", "Revocation events applied to the local cache."
        )
        applied.add_metric([], cache.revocations_applied)
        received = CounterMetricFamily(
            "doma_authz_revocation_events_received", "Payloads received from the invalidation bus."
        )
        received.add_metric([], cache.events_received)
        flushes = CounterMetricFamily(
            "doma_authz_revocation_cache_flushes", "Local cache flushes by cause.", labels=["cause"]
        )
        for cause, count in sorted(cache.flushes.items()):
            flushes.add_metric([cause], count)
        errors = CounterMetricFamily(
            "doma_authz_revocation_store_errors", "Checks whose store lookup failed."
        )
        errors.add_metric([], cache.store_errors)
        bus = GaugeMetricFamily(
            "doma_authz_revocation_bus_connected", "1 while subscribed to the invalidation bus."
        )
        bus.add_metric([], 1.0 if cache.bus_connected else 0.0)
        breaker = GaugeMetricFamily(
            "doma_authz_revocation_store_breaker_state",
            "1 for the store circuit breaker's current state.",
            labels=["state"],
        )
        current = self._breaker_state()
        for state in _BREAKER_STATES:
            breaker.add_metric([state], 1.0 if state == current else 0.0)
        epoch = GaugeMetricFamily(
            "doma_authz_revocation_epoch", "The store's revocation epoch last seen (-1: unknown)."
        )
        epoch.add_metric([], -1.0 if cache.epoch is None else float(cache.epoch))
        yield from (lookups, ratio, applied, received, flushes, errors, bus, breaker, epoch)
