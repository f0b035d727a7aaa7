"""Prometheus metrics of the authz server.

Counters that change on the hot path in the core (token-cache hits, key fetches) are plain
integers there; a collector reads them at scrape time, so a check pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from authz.check import Decision
from authz.keys import KeyCache
from authz.tokens import TokenVerifier

__all__ = ["AuthzMetrics"]

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class AuthzMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        verifier: TokenVerifier,
        key_caches: Mapping[str, KeyCache],
    ):
        self._checks = Counter(
            "doma_authz_checks",
            "Authorization checks by transport, result and reason.",
            ["transport", "result", "reason"],
            registry=registry,
        )
        self._latency = Histogram(
            "doma_authz_check_duration_seconds",
            "Time to decide one check, by transport.",
            ["transport"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, bool], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        registry.register(_CoreCollector(verifier, key_caches))

    def observe(self, transport: str, decision: Decision, seconds: float) -> None:
        key = (transport, decision.reason, decision.allowed)
        child = self._children.get(key)
        if child is None:
            result = "allowed" if decision.allowed else "denied"
            child = self._children[key] = self._checks.labels(transport, result, decision.reason)
        child.inc()
        latency = self._latency_children.get(transport)
        if latency is None:
            latency = self._latency_children[transport] = self._latency.labels(transport)
        latency.observe(seconds)


class _CoreCollector(Collector):
    def __init__(self, verifier: TokenVerifier, key_caches: Mapping[str, KeyCache]):
        self._verifier = verifier
        self._key_caches = key_caches

    def collect(self) -> Iterable[Metric]:
        cache = CounterMetricFamily(
            "doma_authz_token_cache_lookups",
            "Verified-token cache lookups by result.",
            labels=["result"],
        )
        cache.add_metric(["hit"], self._verifier.cache_hits)
        cache.add_metric(["miss"], self._verifier.cache_misses)
        yield cache

        age = GaugeMetricFamily(
            "doma_authz_jwks_age_seconds",
            "Seconds since the issuer's key set in use was fetched (-1: never loaded).",
            labels=["issuer"],
        )
        fetches = CounterMetricFamily(
            "doma_authz_jwks_fetches", "Key-set fetch attempts by issuer.", labels=["issuer"]
        )
        failures = CounterMetricFamily(
            "doma_authz_jwks_refresh_failures",
            "Key-set fetches that failed (the last good keys were kept).",
            labels=["issuer"],
        )
        keys = GaugeMetricFamily(
            "doma_authz_jwks_keys", "Keys currently loaded.", labels=["issuer"]
        )
        for issuer, key_cache in self._key_caches.items():
            current_age = key_cache.age()
            age.add_metric([issuer], -1.0 if current_age is None else current_age)
            fetches.add_metric([issuer], key_cache.fetches)
            failures.add_metric([issuer], key_cache.failures)
            keys.add_metric([issuer], len(key_cache.keys) if key_cache.keys else 0)
        yield from (age, fetches, failures, keys)
