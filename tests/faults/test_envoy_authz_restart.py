"""Envoy in front, the authz server killed (SIGKILL) and started again while traffic flows.

tests/e2e/test_envoy_ext_authz.py checks one request before, during and after a graceful stop;
here requests flow all along: not one passes while the server is down (Envoy fails closed), and
requests pass again soon after the server is back on its port.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest

from doma_gateway.echo import EchoServer
from tests.e2e.test_envoy_ext_authz import Edge, free_port, routes_for, wait_serving
from tests.faults.conftest import Record
from tests.faults.measure import percentile
from tests.support import processes
from tests.support.http import send
from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, jwks

pytestmark = pytest.mark.faults

KEY = SigningKey()


def test_envoy_fails_closed_while_authz_is_killed_and_recovers(tmp_path, record: Record):
    keys = JwksServer(jwks(KEY))
    upstream = EchoServer().start()
    (tmp_path / "routes.yaml").write_text(routes_for(keys.url))
    port = free_port()
    args = [
        "authz",
        "--routes",
        str(tmp_path / "routes.yaml"),
        "--listen",
        f"127.0.0.1:{port}",
        "--no-metrics",
    ]
    server = processes.start(args)
    wait_serving(port)
    edge = Edge(tmp_path, port, upstream)
    token = KEY.token()
    samples: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            started = time.monotonic()
            status = send(edge.port, "/api/v1/x", [("authorization", f"Bearer {token}")]).status
            samples.append((started, time.monotonic() - started, status))
            time.sleep(0.005)

    threads = [threading.Thread(target=traffic) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1)
        killed = time.monotonic()
        server.stop(signal.SIGKILL)
        time.sleep(3)
        restarted = time.monotonic()
        server = processes.start(args)
        listening = time.monotonic()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            s[2] == 200 and s[0] > restarted for s in list(samples)
        ):
            time.sleep(0.01)
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        edge.close()
        server.stop()
        upstream.stop()
        keys.close()
    before = [s for s in samples if s[0] < killed - 0.05]
    # A request that started before the kill may still be answered: judge those after it.
    down = [s for s in samples if killed + 0.05 <= s[0] < restarted]
    first_ok = min(s[0] + s[1] for s in samples if s[2] == 200 and s[0] > restarted)
    after = [s for s in samples if s[0] > first_ok + 0.2]
    record(
        requests_while_down=len(down),
        statuses_while_down=dict(Counter(s[2] for s in down)),
        denial_p99_ms=round(percentile([s[1] for s in down], 0.99) * 1000, 1),
        authz_start_s=round(listening - restarted, 2),
        passing_again_after_start_s=round(first_ok - restarted, 2),
    )
    assert before and {s[2] for s in before} == {200}
    assert down and 200 not in {s[2] for s in down}
    assert {s[2] for s in down} <= {403, 503}
    assert first_ok - restarted < 15
    assert after and {s[2] for s in after} == {200}
