"""Soak: mixed traffic with revocations for ``DOMA_SOAK_SECONDS`` (60 in ``make test``, 600 in
``make test-faults``); resident memory and open descriptors of both commands must stay flat.

The authz server takes gRPC and HTTP checks over a pool of tokens while tokens are revoked through
its admin API (Redis store, Redis Pub/Sub bus); the gateway proxies small GETs, POST bodies,
chunked uploads, 404s and refused paths. After a warm-up (a fifth of the run, at least 10 s) the
samples of each process must stay within a tolerance of the warm-up's.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

import httpx
import pytest

from authz.revocation_client import RevocationApiError
from tests.faults.conftest import Record
from tests.faults.measure import fds, rss_mb
from tests.gateway.conftest import StartGateway, routes_text
from tests.revocation.helpers import Checker, admin_token, revocation_yaml, write_routes
from tests.revocation.test_propagation import _claims, _revoke
from tests.support import processes
from tests.support.http import send
from tests.support.services import PrivateRedis, unique_prefix
from tests.support.tokens import SigningKey
from tests.support.upstreams import ScriptedUpstream

pytestmark = [pytest.mark.faults, pytest.mark.soak]

KEY = SigningKey()
SECONDS = float(os.environ.get("DOMA_SOAK_SECONDS", "60"))
# Allowed growth after the warm-up: allocator noise and caches filling up to their bounds.
RSS_TOLERANCE_MB = 12.0
FD_TOLERANCE = 8


class Workers:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def spawn(self, target, *args: object) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def count(self, key: str, unexpected: str | None = None) -> None:
        with self._lock:
            self.counts[key] += 1
            if unexpected is not None and len(self.unexpected) < 50:
                self.unexpected.append(unexpected)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(15)


def test_mixed_traffic_with_revocations_keeps_memory_and_descriptors_flat(
    tmp_path, start_gateway: StartGateway, upstream: ScriptedUpstream, record: Record
):
    redis = PrivateRedis().start()
    authz = None
    try:
        routes = write_routes(
            tmp_path,
            KEY,
            revocation_yaml(
                redis.url,
                redis.url,
                unique_prefix("soak"),
                epoch_check_interval_seconds=0.5,
                # Memory is what is soaked here, not store timeouts on a starved machine.
                store_timeout_seconds=1,
            ),
        )
        authz = processes.start(
            [
                "authz",
                "--routes",
                str(routes),
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ]
        )
        Checker(authz.port("grpc")).wait_serving()
        gateway = start_gateway(routes_text([upstream.url]), filename="edge.yaml")
        admin, target = admin_token(KEY), str(authz.listening["admin"])
        tokens = [KEY.token(sub=f"user-{n}") for n in range(300)]
        revoked: set[str] = set()
        revoked_lock = threading.Lock()
        workers = Workers()

        def grpc_checks() -> None:
            checker = Checker(authz.port("grpc"))
            rng = random.Random()
            while not workers.stop.is_set():
                token = rng.choice(tokens)
                with revoked_lock:
                    was_revoked = token in revoked
                outcome = checker.check(token)
                # A token revoked just now may still pass once: propagation is not instant.
                if outcome not in ((200, "ok"), (401, "token_revoked")) or (
                    was_revoked and outcome != (401, "token_revoked")
                ):
                    workers.count("grpc", f"grpc {outcome} revoked={was_revoked}")
                else:
                    workers.count("grpc")
            checker.close()

        def http_checks() -> None:
            rng = random.Random()
            with httpx.Client(base_url=f"http://127.0.0.1:{authz.port('http')}") as client:
                while not workers.stop.is_set():
                    token = rng.choice(tokens)
                    reply = client.get(
                        "/api/v1/scan/results", headers={"authorization": f"Bearer {token}"}
                    )
                    bad = reply.status_code not in (200, 401)
                    workers.count("http_check", f"http {reply.status_code}" if bad else None)

        def revocations() -> None:
            rng = random.Random()
            while not workers.stop.is_set():
                token = rng.choice(tokens)
                jti, exp = _claims(token)
                try:
                    _revoke(target, admin, jti=jti, exp=exp)
                except RevocationApiError as exc:
                    workers.count("revocations", f"revoke failed: {exc}")
                    continue
                with revoked_lock:
                    revoked.add(token)
                workers.count("revocations")
                workers.stop.wait(0.25)

        def edge_traffic() -> None:
            rng = random.Random()
            with httpx.Client(base_url=gateway.url, timeout=10) as client:
                while not workers.stop.is_set():
                    kind = rng.randrange(5)
                    if kind == 0:
                        status = client.get("/api/v2/scan/echo").status_code
                        expected = 200
                    elif kind == 1:
                        status = client.post("/api/v2/scan/upload", content=b"x" * 4096).status_code
                        expected = 200
                    elif kind == 2:
                        pieces = (b"y" * 1024 for _ in range(16))
                        status = client.post("/api/v2/scan/upload", content=pieces).status_code
                        expected = 200
                    elif kind == 3:
                        status = client.get("/api/v9/nowhere/x").status_code
                        expected = 404
                    else:
                        status = send(gateway.port, "/api/v2/scan/a%2Fb").status
                        expected = 400
                    workers.count("edge", None if status == expected else f"edge {kind} {status}")

        for _ in range(2):
            workers.spawn(grpc_checks)
        workers.spawn(http_checks)
        workers.spawn(revocations)
        for _ in range(2):
            workers.spawn(edge_traffic)

        pids = {"authz": authz.process.pid, "gateway": gateway.process.process.pid}
        samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in pids}
        started = time.monotonic()
        interval = max(1.0, SECONDS / 60)
        while time.monotonic() - started < SECONDS:
            time.sleep(interval)
            for name, pid in pids.items():
                samples[name].append((time.monotonic() - started, rss_mb(pid), fds(pid)))
        workers.join()

        warmup = max(10.0, SECONDS / 5)
        numbers: dict[str, object] = {
            "seconds": SECONDS,
            "requests": dict(workers.counts),
            "unexpected": len(workers.unexpected),
        }
        drift: dict[str, tuple[float, int]] = {}
        for name, series in samples.items():
            warm = [s for s in series if s[0] <= warmup]
            steady = [s for s in series if s[0] > warmup]
            rss_growth = max(s[1] for s in steady) - max(s[1] for s in warm)
            fd_growth = max(s[2] for s in steady) - max(s[2] for s in warm)
            drift[name] = (rss_growth, fd_growth)
            numbers[f"{name}_rss_mb"] = [
                round(series[0][1], 1),
                round(warm[-1][1], 1),
                round(series[-1][1], 1),
            ]
            numbers[f"{name}_rss_drift_mb"] = round(rss_growth, 2)
            numbers[f"{name}_fds"] = [series[0][2], warm[-1][2], series[-1][2]]
            numbers[f"{name}_fd_drift"] = fd_growth
        record(**numbers)

        assert workers.unexpected == [], workers.unexpected[:10]
        assert workers.counts["revocations"] >= SECONDS * 2
        assert workers.counts["grpc"] > SECONDS * 50
        assert workers.counts["edge"] > SECONDS * 20
        for name, (rss_growth, fd_growth) in drift.items():
            assert rss_growth < RSS_TOLERANCE_MB, (name, numbers)
            assert fd_growth <= FD_TOLERANCE, (name, numbers)
        assert authz.process.poll() is None and gateway.process.process.poll() is None
    finally:
        if authz is not None:
            authz.stop()
        redis.close()
    assert "Traceback" not in authz.stderr(), authz.stderr()[-3000:]
    assert "Traceback" not in gateway.process.stderr()
