"""Upstream endpoints killed, slow and failing while traffic flows through a real gateway.

tests/gateway/test_resilience.py checks each mechanism alone with one request at a time; here
they work together under concurrent traffic: retries move requests off the broken endpoints,
outlier detection ejects them, the breaker opens when nothing is left and closes again when an
endpoint returns, and no request ever waits past the upstream's total deadline.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.faults.conftest import Record
from tests.faults.measure import percentile, wait_until
from tests.gateway.conftest import StartGateway
from tests.support.http import send

pytestmark = pytest.mark.faults

TOTAL_SECONDS = 1.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out in two writes: without this the body waits for a delayed ACK.
    disable_nagle_algorithm = True
    server: ModalUpstream

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        self.server.hits += 1
        if self.server.mode == "slow":
            time.sleep(3)
        status = 503 if self.server.mode == "503" else 200
        body = f'{{"endpoint": "{self.server.name}"}}'.encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ModalUpstream(ThreadingHTTPServer):
    """One endpoint that is ``ok``, ``slow`` (3 s) or ``503``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, mode: str, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.name, self.mode, self.hits = name, mode, 0
        self.connections: list[socket.socket] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        self.connections.append(request)
        super().process_request(request, client_address)

    def kill(self) -> None:
        """Like a crashed process: the listener and every open connection are gone."""
        self.shutdown()
        self.server_close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()

    def handle_error(self, request: object, client_address: object) -> None:
        return


def _routes(endpoints: list[str]) -> str:
    return f"""\
layers: [product]
domains:
  scan:
    layer: product
    owner: team-scan
    auth: bypass
    upstream: main
    versions:
      v1:
        routes:
          - {{name: all, path: /**, rewrite: {{prefix: /}}}}
upstreams:
  main:
    endpoints: [{", ".join(endpoints)}]
    timeouts: {{connect_seconds: 0.3, read_seconds: 0.3, total_seconds: {TOTAL_SECONDS}}}
    retries:
      attempts: 3
      # 502: a request in flight on an endpoint as it dies is cut off (upstream_protocol_error);
      # like the default policy, try it again elsewhere.
      retry_on: [connect_failure, timeout, 502, 503]
      backoff: {{base_seconds: 0.005, max_seconds: 0.02}}
      budget: {{ratio: 1.0, min_concurrency: 16}}
    circuit_breaker: {{failures: 12, reset_seconds: 1}}
    outlier_detection: {{consecutive_failures: 2, ejection_seconds: 60, max_ejected_percent: 75}}
"""


class Load:
    """GETs from ``threads`` threads: (start, seconds, status, reason) of every request."""

    def __init__(self, url: str, threads: int = 4):
        self.url = url
        self.samples: list[tuple[float, float, int, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    reply = client.get(self.url)
                    status = reply.status_code
                    reason = reply.json().get("reason", "") if status >= 500 else ""
                except httpx.HTTPError as exc:
                    status, reason = 0, repr(exc)
                with self._lock:
                    self.samples.append((started, time.monotonic() - started, status, reason))
                time.sleep(0.005)

    def window(
        self, start: float, end: float = float("inf")
    ) -> list[tuple[float, float, int, str]]:
        with self._lock:
            return [s for s in self.samples if start <= s[0] < end]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@pytest.fixture
def endpoints() -> Iterator[dict[str, ModalUpstream]]:
    made = {
        "good": ModalUpstream("good", "ok"),
        "slow": ModalUpstream("slow", "slow"),
        "failing": ModalUpstream("failing", "503"),
        "killed": ModalUpstream("killed", "ok"),
    }
    yield made
    for server in made.values():
        with contextlib.suppress(OSError):
            server.kill()


def test_killed_slow_and_failing_endpoints_under_traffic(
    start_gateway: StartGateway, endpoints: dict[str, ModalUpstream], record: Record
):
    good, slow, failing, killed = (endpoints[k] for k in ("good", "slow", "failing", "killed"))
    gateway = start_gateway(_routes([e.url for e in endpoints.values()]))
    admin = f"{gateway.admin}/admin/routes"

    def ejected() -> dict[str, bool]:
        table = httpx.get(admin).json()["upstreams"][0]["endpoints"]
        return {e["url"]: e["ejected"] for e in table}

    with Load(f"{gateway.url}/api/v1/scan/work") as load:
        time.sleep(0.5)
        start = time.monotonic()
        killed.kill()
        ejected_after = wait_until(
            lambda: (
                ejected() == {good.url: False, slow.url: True, failing.url: True, killed.url: True}
            ),
            10,
        )
        time.sleep(2)
        mixed = load.window(start)
        slow_hits, failing_hits = slow.hits, failing.hits

        # Phase 2: the last endpoint dies too; the breaker opens and answers at once.
        good_port = good.server_address[1]
        good.kill()
        # Requests answered before kill() returned are not part of the outage.
        gone = time.monotonic()
        opened = wait_until(lambda: any(s[3] == "circuit_open" for s in load.window(gone)), 10)
        time.sleep(1.5)
        down = load.window(gone)
        open_samples = [s for s in load.window(gone + opened + 0.1) if s[3] == "circuit_open"]

        # Phase 3: the endpoint returns on the same port; the half-open probe closes the breaker.
        back = time.monotonic()
        endpoints["good"] = ModalUpstream("good", "ok", port=good_port)
        recovered = wait_until(lambda: any(s[2] == 200 for s in load.window(back)), 10)
        time.sleep(1)
        after = load.window(back + recovered + 0.2)

    statuses = Counter(s[2] for s in mixed)
    longest = max(s[1] for s in load.samples)
    record(
        requests_with_faults=len(mixed),
        ok_with_faults=statuses[200],
        failed_with_faults=len(mixed) - statuses[200],
        p99_ms_with_faults=round(percentile([s[1] for s in mixed], 0.99) * 1000, 1),
        ejected_within_s=round(ejected_after, 2),
        attempts_on_slow=slow_hits,
        attempts_on_failing=failing_hits,
        breaker_open_within_s=round(opened, 2),
        circuit_open_p99_ms=round(percentile([s[1] for s in open_samples], 0.99) * 1000, 1),
        all_down_statuses=dict(Counter(s[3] or str(s[2]) for s in down)),
        recovered_within_s=round(recovered, 2),
        longest_request_s=round(longest, 3),
    )
    # Retries move every request to the good endpoint: none fails while one endpoint works.
    assert statuses == Counter({200: len(mixed)}), [s for s in mixed if s[2] != 200]
    # Ejected after a couple of failures each, then left alone.
    assert slow_hits <= 8 and failing_hits <= 8
    # With nothing left, clear 503/504 answers; once open, the breaker answers at once.
    assert {s[2] for s in down} <= {503, 504}
    assert open_samples and percentile([s[1] for s in open_samples], 0.99) < 0.1
    assert opened < 5
    # The endpoint is back: the breaker's reset (1 s) plus a probe.
    assert recovered < 5
    assert after and {s[2] for s in after} == {200}
    # The total deadline bounds every request, retries and backoff included.
    assert longest < TOTAL_SECONDS + 0.5
    assert send(gateway.port, "/api/v1/scan/work").status == 200
