"""Overload: more requests in flight than an upstream's ``max_requests`` are refused at once.

Nothing queues: the excess gets 503 ``upstream_overflow`` with ``Retry-After`` in milliseconds
while the admitted requests finish, and the gateway's memory stays flat over repeated waves.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.faults.conftest import Record
from tests.faults.measure import percentile, rss_mb
from tests.gateway.conftest import StartGateway, routes_text
from tests.support.http import Reply, send
from tests.support.upstreams import ScriptedUpstream

pytestmark = pytest.mark.faults

LIMIT = 8
SETTINGS = f"""\
    max_requests: {LIMIT}
    # The scripted upstream listens with a backlog of 5: a burst of new connections may wait
    # for a SYN retransmit (1 s), which is not what this test is about.
    timeouts: {{connect_seconds: 3, read_seconds: 5, total_seconds: 8}}
    circuit_breaker: false
    outlier_detection: false
"""


def _wave(port: int, path: str, count: int) -> list[tuple[Reply, float]]:
    """``count`` requests at once, each on its own connection: (reply, seconds)."""
    results: list[tuple[Reply, float]] = []
    lock = threading.Lock()
    gate = threading.Barrier(count)

    def one() -> None:
        gate.wait()
        started = time.perf_counter()
        reply = send(port, path, timeout=20)
        with lock:
            results.append((reply, time.perf_counter() - started))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_requests_over_max_requests_get_a_fast_503_with_retry_after(
    start_gateway: StartGateway, upstream: ScriptedUpstream, record: Record
):
    gateway = start_gateway(routes_text([upstream.url], SETTINGS))
    pid = gateway.process.process.pid
    assert send(gateway.port, "/api/v2/scan/echo").status == 200
    rss_before = rss_mb(pid)
    refused_latencies: list[float] = []
    admitted = 0
    for _ in range(3):
        results = _wave(gateway.port, "/api/v2/scan/slow/1", 96)
        ok = [seconds for reply, seconds in results if reply.status == 200]
        refused = [(reply, seconds) for reply, seconds in results if reply.status == 503]
        assert len(ok) + len(refused) == len(results), {r.status for r, _ in results}
        # The limit is never exceeded; it is used (a few may start after others finished).
        assert LIMIT // 2 <= len(ok) <= 2 * LIMIT
        for reply, _ in refused:
            assert reply.json()["reason"] == "upstream_overflow"
            assert reply.headers["retry-after"] == "1"
        refused_latencies += [seconds for _, seconds in refused]
        admitted += len(ok)
    assert upstream.hits["/slow/1"] == admitted
    rss_after = rss_mb(pid)
    p50, p99 = percentile(refused_latencies, 0.5), percentile(refused_latencies, 0.99)
    record(
        refused=len(refused_latencies),
        admitted=admitted,
        refused_p50_ms=round(p50 * 1000, 1),
        refused_p99_ms=round(p99 * 1000, 1),
        rss_before_mb=round(rss_before, 1),
        rss_after_mb=round(rss_after, 1),
    )
    # A refusal never waits for a slot: far below the 1 s the admitted requests take.
    assert p99 < 0.5
    assert rss_after - rss_before < 30
    metrics = send(gateway.process.port("admin"), "/metrics").body.decode()
    assert 'reason="upstream_overflow"' in metrics
    # Once the wave is over the slots are free again.
    assert send(gateway.port, "/api/v2/scan/echo").status == 200


def test_a_limit_of_one_admits_one_request_at_a_time(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    gateway = start_gateway(
        routes_text([upstream.url], SETTINGS.replace(f"max_requests: {LIMIT}", "max_requests: 1"))
    )
    results = _wave(gateway.port, "/api/v2/scan/slow/0.5", 10)
    statuses = sorted(reply.status for reply, _ in results)
    assert statuses.count(200) >= 1
    assert statuses.count(503) >= 8
    assert upstream.hits["/slow/0.5"] == statuses.count(200)
