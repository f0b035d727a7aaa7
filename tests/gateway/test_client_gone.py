"""A client that leaves before its answer begins: the gateway stops working for it.

Like Envoy resetting the upstream stream, the request's work is cancelled: the upstream's
``max_requests`` slot and connection are free at once instead of when the slow answer comes,
and the request counts as 499, with no error logged.
"""

from __future__ import annotations

import socket
import time

import httpx

from tests.gateway.conftest import StartGateway, routes_text
from tests.support.http import send
from tests.support.upstreams import ScriptedUpstream

ONE_AT_A_TIME = """\
    max_requests: 1
    timeouts: {connect_seconds: 1, read_seconds: 10, total_seconds: 10}
    circuit_breaker: false
    outlier_detection: false
"""


def test_a_client_that_leaves_frees_its_upstream_slot_at_once(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    gateway = start_gateway(routes_text([upstream.url], ONE_AT_A_TIME))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as impatient:
        impatient.sendall(b"GET /api/v2/scan/slow/5 HTTP/1.1\r\nhost: edge\r\n\r\n")
        deadline = time.monotonic() + 5
        while upstream.hits["/slow/5"] == 0:  # the request holds the one slot
            assert time.monotonic() < deadline
            time.sleep(0.02)
    # Gone before the answer: the next request gets the slot, not 503 upstream_overflow.
    time.sleep(0.2)
    reply = send(gateway.port, "/api/v2/scan/echo")
    assert reply.status == 200, reply.body
    metrics = httpx.get(gateway.admin + "/metrics").text
    assert 'status="499"' in metrics
    assert "Exception in ASGI application" not in gateway.process.stderr()
    assert "Traceback" not in gateway.process.stderr()
