"""Upstream pool state machines with a fake clock: breaker, outlier ejection, balancing, budget."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import CircuitOpen
from gateway.metrics import GatewayMetrics
from gateway.routes_model import CircuitBreakerSettings, OutlierDetection, RetryPolicy, Upstream
from gateway.upstream_pool import Breaker, UpstreamPool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pool(clock: Clock, endpoints: int = 2, **settings: object) -> UpstreamPool:
    upstream = Upstream("up", tuple(f"http://e{i}" for i in range(endpoints)), **settings)  # type: ignore[arg-type]
    return UpstreamPool(upstream, GatewayMetrics(CollectorRegistry()), clock=clock)


def test_breaker_opens_after_consecutive_failures_and_half_opens_for_one_probe():
    clock = Clock()
    states: list[str] = []
    breaker = Breaker(
        "up", CircuitBreakerSettings(failures=3, reset_seconds=10), states.append, clock
    )
    for _ in range(3):
        breaker.admit()
        breaker.record(ok=False)
    assert breaker.state == "open" and states[-1] == "open"
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit()
    assert ("retry-after", "10") in caught.value.headers

    clock.now += 10
    breaker.admit()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.admit()  # a second caller while the probe is out
    breaker.record(ok=True)
    assert breaker.state == "closed"
    breaker.admit()


def test_a_success_resets_the_failure_count():
    breaker = Breaker("up", CircuitBreakerSettings(failures=2), lambda state: None, Clock())
    for ok in (False, True, False, True, False):
        breaker.admit()
        breaker.record(ok=ok)
    assert breaker.state == "closed"


def test_outlier_ejection_skips_the_endpoint_then_brings_it_back():
    clock = Clock()
    pool = _pool(clock, outlier_detection=OutlierDetection(2, 30.0, 50))
    bad = pool.endpoints[0]
    pool.record(bad, ok=False)
    pool.record(bad, ok=False)
    assert pool.ejected_count() == 1
    assert {pool.pick().url for _ in range(4)} == {"http://e1"}
    clock.now += 30
    assert {pool.pick().url for _ in range(4)} == {"http://e0", "http://e1"}
    # Ejected again: twice as long (Envoy's multiplier).
    pool.record(bad, ok=False)
    pool.record(bad, ok=False)
    clock.now += 59
    assert pool.ejected_count() == 1


def test_max_ejected_percent_keeps_endpoints_in_service():
    pool = _pool(Clock(), outlier_detection=OutlierDetection(1, 30.0, 50))
    for endpoint in pool.endpoints:
        pool.record(endpoint, ok=False)
    assert pool.ejected_count() == 1


def test_least_outstanding_picks_the_idle_endpoint():
    pool = _pool(Clock(), endpoints=3, load_balancing="least_outstanding")
    pool.endpoints[0].outstanding = 5
    pool.endpoints[1].outstanding = 1
    assert {pool.pick().url for _ in range(5)} == {"http://e2"}


def test_a_retry_goes_to_an_endpoint_not_tried_yet():
    for balancing in ("round_robin", "least_outstanding"):
        pool = _pool(Clock(), endpoints=3, load_balancing=balancing)
        first = pool.pick()
        second = pool.pick((first,))
        third = pool.pick((first, second))
        assert len({first.url, second.url, third.url}) == 3
        # Every endpoint tried: the balancer chooses among all of them again.
        assert pool.pick((first, second, third)) in pool.endpoints


def test_a_retry_never_picks_an_ejected_endpoint_it_has_not_tried():
    pool = _pool(Clock(), endpoints=3, outlier_detection=OutlierDetection(1, 30.0, 100))
    e0, e1, e2 = pool.endpoints
    pool.record(e2, ok=False)
    assert {pool.pick((e0,)).url for _ in range(4)} == {"http://e1"}
    # Only the tried endpoint is healthy: it is used again rather than an ejected one.
    pool.record(e1, ok=False)
    assert {pool.pick((e0,)).url for _ in range(4)} == {"http://e0"}


def test_retry_budget_is_a_share_of_active_requests_with_a_floor():
    pool = _pool(
        Clock(), retries=RetryPolicy(attempts=3, budget_ratio=0.2, budget_min_concurrency=3)
    )
    pool.active = 100
    pool.retries_in_flight = 19
    assert pool.may_retry()
    pool.retries_in_flight = 20
    assert not pool.may_retry()
    pool.active = 1
    pool.retries_in_flight = 2
    assert pool.may_retry()
    pool.retries_in_flight = 3
    assert not pool.may_retry()
