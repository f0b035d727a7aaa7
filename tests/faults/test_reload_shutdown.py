"""Reloads and SIGTERM while traffic flows, for both commands.

tests/gateway/test_reload.py already proves a file-change reload during traffic fails nothing and
that a broken file is rejected (without traffic); here SIGHUP and a broken file land in the middle
of traffic, and SIGTERM is sent with requests in flight: health turns NOT_SERVING first, in-flight
work completes, new connections are refused, and the process exits within its grace period.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.faults.conftest import Record
from tests.gateway.conftest import StartGateway, routes_text
from tests.gateway.test_reload import _replace, _Traffic
from tests.revocation.helpers import check_request
from tests.support import processes
from tests.support.jwks_server import JwksServer
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks
from tests.support.upstreams import ScriptedUpstream

pytestmark = pytest.mark.faults

KEY = SigningKey()


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_sighup_and_a_broken_file_during_traffic_fail_no_request(
    start_gateway: StartGateway, upstream: ScriptedUpstream, record: Record
):
    text = routes_text([upstream.url])
    gateway = start_gateway(text)
    with _Traffic(f"{gateway.url}/api/v2/scan/fixed") as traffic:
        time.sleep(0.5)
        _replace(gateway.routes, text.replace("/somewhere/else", "/after/hup"))
        gateway.process.wait_event("reloaded", timeout=10)
        sent = time.monotonic()
        gateway.process.process.send_signal(signal.SIGHUP)
        assert gateway.process.wait_event("reloaded", timeout=10)["trigger"] == "sighup"
        sighup_seconds = time.monotonic() - sent
        time.sleep(0.3)
        # A broken file lands while requests flow: rejected, the running config keeps serving.
        _replace(
            gateway.routes,
            text.replace("upstream: main\n    default_version", "upstream: x\n    default_version"),
        )
        rejected = gateway.process.wait_event("reload_rejected", timeout=10)
        time.sleep(0.5)
        count_before_fix = len(traffic.statuses)
        _replace(gateway.routes, text.replace("/somewhere/else", "/fixed/again"))
        gateway.process.wait_event("reloaded", timeout=10)
        time.sleep(0.3)
    record(
        requests=len(traffic.statuses),
        failed=len(traffic.errors) + sum(1 for s in traffic.statuses if s != 200),
        sighup_reload_s=round(sighup_seconds, 3),
        served_while_rejected=count_before_fix,
    )
    assert "upstream 'x' is not defined" in str(rejected["error"])
    assert ":17:15:" in str(rejected["error"])
    assert traffic.errors == []
    assert set(traffic.statuses) == {200}
    assert {"/somewhere/else", "/after/hup", "/fixed/again"} <= set(traffic.paths)
    assert len(traffic.statuses) > 100


def test_gateway_sigterm_with_requests_in_flight(
    start_gateway: StartGateway, upstream: ScriptedUpstream, record: Record
):
    gateway = start_gateway(routes_text([upstream.url]))
    results: list[int] = []

    def slow() -> None:
        results.append(httpx.get(f"{gateway.url}/api/v2/scan/slow/1.5", timeout=10).status_code)

    threads = [threading.Thread(target=slow) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait = time.monotonic() + 5
    while upstream.hits["/slow/1.5"] < 8 and time.monotonic() < wait:
        time.sleep(0.01)
    signalled = time.monotonic()
    gateway.process.process.send_signal(signal.SIGTERM)
    # Readiness turns 503 first, while the admin listener still answers and requests drain.
    ready_status = 0
    while time.monotonic() - signalled < 1:
        try:
            ready_status = httpx.get(f"{gateway.admin}/readyz", timeout=1).status_code
        except httpx.HTTPError:
            break
        if ready_status == 503:
            break
        time.sleep(0.01)
    not_ready_after = time.monotonic() - signalled
    refused = False
    while time.monotonic() - signalled < 1:
        if _refused(gateway.port):
            refused = True
            break
        time.sleep(0.01)
    refused_after = time.monotonic() - signalled
    for thread in threads:
        thread.join()
    code = gateway.process.process.wait(15)
    exited_after = time.monotonic() - signalled
    record(
        in_flight=len(threads),
        completed_200=results.count(200),
        not_ready_after_s=round(not_ready_after, 3),
        new_connections_refused_after_s=round(refused_after, 3),
        exited_after_s=round(exited_after, 2),
    )
    assert ready_status == 503 and not_ready_after < 0.5
    assert refused and refused_after < 1
    assert results == [200] * 8
    assert code == 0
    # The longest in-flight request had ~1.5 s left; drain_seconds (10) is the bound.
    assert exited_after < 10
    gateway.process.wait_event("stopped")
    assert "Traceback" not in gateway.process.stderr()


def test_authz_sigterm_turns_not_serving_first_and_drains(tmp_path, record: Record):
    keys = JwksServer(jwks(KEY))
    (tmp_path / "routes.yaml").write_text(
        f"auth:\n  issuers:\n    - issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n"
        f"      jwks_url: {keys.url}\n"
        "      jwks_cache: {refetch_min_interval_seconds: 0, min_ttl_seconds: 1}\n"
    )
    server = processes.start(
        [
            "authz",
            "--routes",
            str(tmp_path / "routes.yaml"),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--grace",
            "3",
        ]
    )
    port = server.port("grpc")
    events: list[tuple[float, str]] = []
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=20
        )

        def follow() -> None:
            try:
                for reply in watch:
                    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                    events.append((time.monotonic(), name))
            except grpc.RpcError:
                events.append((time.monotonic(), "stream_closed"))

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        deadline = time.monotonic() + 15
        while ("SERVING" not in [e[1] for e in events]) and time.monotonic() < deadline:
            time.sleep(0.02)
        # An unknown kid makes the check wait on a slow key fetch: in flight at SIGTERM.
        keys.delay = 1.0
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        check = stub.Check.future(check_request(SigningKey().token()), timeout=5)
        time.sleep(0.3)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        reply = check.result()
        answered = time.monotonic()
        http_refused = False
        while time.monotonic() - signalled < 2:
            if _refused(server.port("http")):
                http_refused = True
                break
            time.sleep(0.01)
        code = server.process.wait(10)
        exited = time.monotonic()
        follower.join(5)
        channel.close()
    finally:
        server.stop()
        keys.close()
    not_serving = next(t for t, name in events if name == "NOT_SERVING" and t >= signalled)
    record(
        not_serving_after_s=round(not_serving - signalled, 3),
        in_flight_answered_after_s=round(answered - signalled, 3),
        exited_after_s=round(exited - signalled, 2),
    )
    assert json.loads(reply.denied_response.body)["reason"] == "unknown_key"
    assert not_serving < answered
    assert http_refused
    assert code == 0
    # A Health.Watch stream stays open until the grace (3 s) ends; nothing waits longer.
    assert exited - signalled < 3 + 2
    assert "Traceback" not in server.stderr()
