"""The per-check metrics: plain counts under a lock, exported at scrape time."""

from __future__ import annotations

import sys
import threading

from prometheus_client import CollectorRegistry, generate_latest

from authz.check import allow, deny
from authz.metrics import AuthzMetrics


class _Verifier:
    cache_hits = 0
    cache_misses = 0


def _exposition(metrics_registry: CollectorRegistry) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in generate_latest(metrics_registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_checks_and_latency_buckets_are_exported_like_prometheus_client_would() -> None:
    registry = CollectorRegistry()
    metrics = AuthzMetrics(registry, _Verifier(), {})  # type: ignore[arg-type]
    allowed, denied = allow("ok", (), ()), deny(401, "token_expired")
    metrics.observe("grpc", allowed, 0.0003)
    metrics.observe("grpc", allowed, 0.00025)  # on a bound: counted in that bucket (le)
    metrics.observe("http", denied, 2.0)  # past the last bound: +Inf only
    samples = _exposition(registry)
    assert samples['doma_authz_checks_total{reason="ok",result="allowed",transport="grpc"}'] == 2
    denied_key = 'doma_authz_checks_total{reason="token_expired",result="denied",transport="http"}'
    assert samples[denied_key] == 1
    bucket = 'doma_authz_check_duration_seconds_bucket{le="%s",transport="%s"}'
    assert samples[bucket % ("0.0001", "grpc")] == 0
    assert samples[bucket % ("0.00025", "grpc")] == 1
    assert samples[bucket % ("0.0005", "grpc")] == 2
    assert samples[bucket % ("+Inf", "grpc")] == 2
    assert samples[bucket % ("0.25", "http")] == 0
    assert samples[bucket % ("+Inf", "http")] == 1
    assert samples['doma_authz_check_duration_seconds_count{transport="grpc"}'] == 2
    assert abs(samples['doma_authz_check_duration_seconds_sum{transport="grpc"}'] - 0.00055) < 1e-12


def test_no_check_is_lost_when_threads_count_at_once() -> None:
    registry = CollectorRegistry()
    metrics = AuthzMetrics(registry, _Verifier(), {})  # type: ignore[arg-type]
    decision = allow("ok", (), ())

    def count() -> None:
        for _ in range(20_000):
            metrics.observe("grpc", decision, 0.0001)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave inside each read-modify-write
    threads = [threading.Thread(target=count) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    counted = _exposition(registry)
    checks = 'doma_authz_checks_total{reason="ok",result="allowed",transport="grpc"}'
    assert counted[checks] == 80_000
    assert counted['doma_authz_check_duration_seconds_count{transport="grpc"}'] == 80_000
