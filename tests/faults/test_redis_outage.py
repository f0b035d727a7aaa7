"""Redis killed and restarted while checks run without pause from several threads.

Extends tests/revocation/test_outages.py (one client, one check at a time) with steady concurrent
traffic: with ``on_store_error: deny`` every check during the outage is a 503
``revocation_store_unavailable`` answered behind the breaker (no timeout pile-up, p99 bounded),
checks pass again within seconds of Redis returning, and the authz process never restarts.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from tests.faults.conftest import Record
from tests.faults.measure import percentile
from tests.revocation.helpers import Checker, revocation_yaml, wait_for, write_routes
from tests.revocation.test_outages import start_authz
from tests.support.services import PrivateRedis, unique_prefix
from tests.support.tokens import SigningKey

pytestmark = pytest.mark.faults

KEY = SigningKey()
STORE_TIMEOUT = 0.25


class Traffic:
    """Checks in a loop on ``threads`` threads: (start time, seconds, outcome) of every one."""

    def __init__(self, port: int, token: str, threads: int = 4):
        self.token = token
        self.samples: list[tuple[float, float, tuple[int, str] | str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._checkers = [Checker(port) for _ in range(threads)]
        self._threads = [threading.Thread(target=self._run, args=(c,)) for c in self._checkers]

    def _run(self, checker: Checker) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                outcome: tuple[int, str] | str = checker.check(self.token, timeout=5)
            except grpc.RpcError as exc:
                outcome = f"rpc_error:{exc.code()}"
            with self._lock:
                self.samples.append((started, time.monotonic() - started, outcome))
            time.sleep(0.002)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for checker in self._checkers:
            checker.close()

    def between(self, start: float, end: float) -> list[tuple[float, float, tuple[int, str] | str]]:
        with self._lock:
            return [s for s in self.samples if start <= s[0] < end]


def test_redis_killed_under_steady_checks_denies_fast_and_recovers_without_restart(
    tmp_path, record: Record
):
    redis = PrivateRedis().start()
    server = None
    try:
        routes = write_routes(
            tmp_path,
            KEY,
            revocation_yaml(
                redis.url,
                redis.url,
                unique_prefix("faults-redis"),
                epoch_check_interval_seconds=0.5,
                store_timeout_seconds=STORE_TIMEOUT,
                on_store_error="deny",
            ),
        )
        server, checker = start_authz(routes)
        token = KEY.token(sub="steady")
        assert checker.check(token) == (200, "ok")
        with Traffic(server.port("grpc"), token) as traffic:
            time.sleep(2)
            killed = time.monotonic()
            redis.stop()
            seen = wait_for(
                lambda: checker.check(token) == (503, "revocation_store_unavailable"), 5
            )
            time.sleep(4)
            restarted = time.monotonic()
            redis.start()
            recovered = wait_for(lambda: checker.check(token) == (200, "ok"), 20, interval=0.02)
            time.sleep(2)
            ended = time.monotonic()

        # Answered before the kill: a check sent a moment earlier may reach the store after it.
        before = [s for s in traffic.between(0, killed) if s[0] + s[1] < killed]
        during = traffic.between(killed, restarted)
        settled = traffic.between(killed + seen + 0.5, restarted)
        after = traffic.between(restarted + recovered + 0.5, ended)
        assert before
        # Any other answer, with when it was sent relative to the kill, to tell a race from a fault.
        assert not [(round(t - killed, 3), o) for t, _, o in before if o != (200, "ok")]
        # Every check during the outage is a clear answer: 503 with a reason, or 200 for the
        # ones decided before the cache stopped being trusted; never an error, never a timeout.
        outcomes = {o for _, _, o in during}
        assert outcomes <= {(200, "ok"), (503, "revocation_store_unavailable")}, outcomes
        assert {o for _, _, o in settled} == {(503, "revocation_store_unavailable")}
        latencies = [seconds for _, seconds, _ in during]
        settled_latencies = [seconds for _, seconds, _ in settled]
        assert {o for _, _, o in after} == {(200, "ok")}
        assert server.process.poll() is None
        record(
            checks_during_outage=len(during),
            denied_503=sum(1 for _, _, o in during if o == (503, "revocation_store_unavailable")),
            errors=sum(1 for _, _, o in traffic.samples if isinstance(o, str)),
            outage_seen_s=round(seen, 3),
            outage_p50_ms=round(percentile(latencies, 0.5) * 1000, 2),
            outage_p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
            outage_max_ms=round(max(latencies) * 1000, 2),
            breaker_open_p99_ms=round(percentile(settled_latencies, 0.99) * 1000, 2),
            recovery_s=round(recovered, 3),
        )
        # The breaker's bound: a store call costs at most 2 x store_timeout, and only the few
        # calls before the breaker opens pay it; once open, checks are answered at once.
        assert max(latencies) < 2 * 2 * STORE_TIMEOUT + 0.5
        assert percentile(settled_latencies, 0.99) < 0.1
        assert seen < 2.0
        # Recovery: the breaker's reset (2 s) plus one epoch check; several times the measured.
        assert recovered < 10
    finally:
        if server is not None:
            server.stop()
        redis.close()
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]
