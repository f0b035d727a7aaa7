"""The gateway app in process, its upstream mocked with respx (a fake transport, no sockets)."""

from __future__ import annotations

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry, generate_latest

from gateway.app import GatewayApp
from gateway.metrics import GatewayMetrics
from gateway.routes_model import (
    Backoff,
    Domain,
    GatewaySettings,
    RetryPolicy,
    Route,
    RoutesConfig,
    Upstream,
    Version,
)
from gateway.runtime import RuntimeHolder, build_runtime

UPSTREAM = "http://scan.internal:8000"


def _app(mock: respx.MockRouter, **upstream: object) -> tuple[GatewayApp, GatewayMetrics]:
    routes = (Route("/**", "scan-api", auth="bypass", name="all"),)
    domain = Domain("scan", "product", "team", (Version("v1", routes),), default_version="v1")
    settings = Upstream("scan-api", (UPSTREAM,), **upstream)  # type: ignore[arg-type]
    config = RoutesConfig(("product",), (domain,), {"scan-api": settings}, GatewaySettings())
    metrics = GatewayMetrics(CollectorRegistry())
    transport = httpx.MockTransport(mock.async_handler)
    holder = RuntimeHolder(build_runtime(config, transport=transport, metrics=metrics))
    return GatewayApp(holder, metrics), metrics


def _client(app: GatewayApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge.example")


async def test_forwards_through_a_respx_mocked_upstream():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(f"{UPSTREAM}/api/v1/scan/results/7").mock(
            return_value=httpx.Response(
                200, json={"ok": True}, headers={"connection": "x-internal", "x-internal": "1"}
            )
        )
        app, metrics = _app(mock)
        async with _client(app) as client:
            reply = await client.get(
                "/api/v1/scan/results/7?full=1", headers={"x-request-id": "r-1"}
            )
    assert reply.status_code == 200 and reply.json() == {"ok": True}
    assert "x-internal" not in reply.headers
    sent = route.calls.last.request
    assert sent.url.query == b"full=1"
    assert sent.headers["x-request-id"] == "r-1"
    assert sent.headers["host"] == "scan.internal:8000"
    assert sent.headers["x-forwarded-host"] == "edge.example"
    text = generate_latest(metrics.registry).decode()
    assert (
        'doma_gateway_requests_total{domain="scan",route="all",status="200",version="v1"} 1.0'
        in text
    )


async def test_retries_then_succeeds_and_counts_the_retries():
    with respx.mock() as mock:
        route = mock.get(f"{UPSTREAM}/api/v1/scan/x").mock(
            side_effect=[httpx.Response(503), httpx.Response(502), httpx.Response(200, text="ok")]
        )
        policy = RetryPolicy(attempts=2, backoff=Backoff(base=0.001, max=0.002))
        app, metrics = _app(mock, retries=policy, circuit_breaker=None, outlier_detection=None)
        async with _client(app) as client:
            reply = await client.get("/api/v1/scan/x")
    assert reply.status_code == 200 and reply.text == "ok"
    assert route.call_count == 3
    assert (
        'doma_gateway_upstream_retries_total{upstream="scan-api"} 2.0'
        in generate_latest(metrics.registry).decode()
    )


async def test_a_connect_error_becomes_a_json_503():
    with respx.mock() as mock:
        mock.get(f"{UPSTREAM}/api/v1/scan/x").mock(side_effect=httpx.ConnectError("refused"))
        app, _ = _app(mock, circuit_breaker=None)
        async with _client(app) as client:
            reply = await client.get("/api/v1/scan/x", headers={"x-request-id": "r-2"})
    assert reply.status_code == 503
    assert reply.json() == {
        "error": "service_unavailable",
        "reason": "upstream_connect_failed",
        "upstream": "scan-api",
        "request_id": "r-2",
    }


@pytest.mark.parametrize(
    ("exception", "status", "reason"),
    [
        (httpx.ReadTimeout("slow"), 504, "upstream_timeout"),
        (httpx.ConnectTimeout("slow"), 504, "upstream_timeout"),
        (httpx.RemoteProtocolError("garbage"), 502, "upstream_protocol_error"),
    ],
)
async def test_transport_errors_map_to_gateway_statuses(
    exception: Exception, status: int, reason: str
):
    with respx.mock() as mock:
        mock.get(f"{UPSTREAM}/api/v1/scan/x").mock(side_effect=exception)
        app, _ = _app(mock, circuit_breaker=None)
        async with _client(app) as client:
            reply = await client.get("/api/v1/scan/x")
    assert (reply.status_code, reply.json()["reason"]) == (status, reason)
