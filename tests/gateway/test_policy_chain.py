"""The policy chain: a route's ``policies:`` run in YAML order, only installed names load."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry

from authz.errors import ConfigError
from authz.yamlnodes import Node
from gateway.app import GatewayApp
from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.metrics import GatewayMetrics
from gateway.policies import POLICIES, ChainContext, PolicySpec
from gateway.routes_loader import load_routes
from gateway.runtime import RuntimeHolder, build_runtime


def routes(*policies: str) -> str:
    """One catch-all route of the scan domain with ``policies`` (YAML flow items), in order."""
    listed = "".join(f"              - {policy}\n" for policy in policies)
    return f"""\
layers: [product]
domains:
  scan:
    layer: product
    owner: team
    upstream: api
    auth: bypass
    versions:
      v1:
        routes:
          - path: /**
            policies:
{listed}upstreams:
  api:
    endpoints: [http://scan.internal]
"""


ROUTES = routes("stamp: {mark: first}", "stamp_again: {mark: second}")


def client(tmp_path: Path, text: str, mock: respx.MockRouter) -> httpx.AsyncClient:
    """A client of the gateway app serving ``text``, its upstream ``mock``."""
    (tmp_path / "routes.yaml").write_text(text)
    config = load_routes(tmp_path / "routes.yaml")
    metrics = GatewayMetrics(CollectorRegistry())
    transport = httpx.MockTransport(mock.async_handler)
    app = GatewayApp(
        RuntimeHolder(build_runtime(config, transport=transport, metrics=metrics)), metrics
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


class StampPolicy:
    """Adds its mark to ``x-chain`` on the way in, so the upstream sees the execution order."""

    def __init__(self, app: ASGIApp, *, settings: bytes):
        self.app = app
        self.mark = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = list(scope["headers"])
        prior = b"".join(v for n, v in headers if n == b"x-chain")
        headers = [(n, v) for n, v in headers if n != b"x-chain"]
        headers.append((b"x-chain", prior + b"," + self.mark if prior else self.mark))
        await self.app({**scope, "headers": headers}, receive, send)


def _parse_stamp(node: Node | None, item: Node) -> bytes:
    assert node is not None
    return node.mapping(("mark",)).require("mark").str().encode()


def _build_stamp(app: ASGIApp, settings: bytes, context: ChainContext) -> ASGIApp:
    return StampPolicy(app, settings=settings)


STAMP = PolicySpec(parse=_parse_stamp, build=_build_stamp)


def test_an_unknown_policy_is_a_config_error_naming_the_line(tmp_path: Path):
    (tmp_path / "routes.yaml").write_text(ROUTES)
    with pytest.raises(
        ConfigError, match=r"routes.yaml:13:17: unknown policy 'stamp' \(known: auth, scopes"
    ):
        load_routes(tmp_path / "routes.yaml")


async def test_policies_run_in_yaml_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(POLICIES, "stamp", STAMP)
    monkeypatch.setitem(POLICIES, "stamp_again", STAMP)
    with respx.mock() as mock:
        route = mock.get("http://scan.internal/api/v1/scan/x").mock(
            return_value=httpx.Response(204)
        )
        async with client(tmp_path, ROUTES, mock) as edge:
            reply = await edge.get("/api/v1/scan/x")
    assert reply.status_code == 204
    assert route.calls.last.request.headers["x-chain"] == "first,second"


POLICY_HEADERS_ROUTES = routes(
    "stamp: {mark: first}",
    "headers: {response: {remove: [vary, ratelimit-policy, x-upstream]}}",
    "cors: {allow_origins: [https://app.example]}",
    "rate_limit: {requests: 5, period_seconds: 60, limit_by: route}",
)


async def test_policy_response_headers_reach_every_answer_after_the_header_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # stamp hands the rest of the chain a copy of the scope: the headers cors and rate_limit add
    # there still reach the answer, and the headers policy's rules, which run on the upstream's
    # answer, leave them alone (it removes x-upstream only).
    monkeypatch.setitem(POLICIES, "stamp", STAMP)
    with respx.mock() as mock:
        mock.get("http://scan.internal/api/v1/scan/ok").mock(
            return_value=httpx.Response(200, headers={"x-upstream": "1", "vary": "Accept"})
        )
        mock.get("http://scan.internal/api/v1/scan/down").mock(
            side_effect=httpx.ConnectError("refused")
        )
        async with client(tmp_path, POLICY_HEADERS_ROUTES, mock) as edge:
            origin = {"origin": "https://app.example"}
            ok = await edge.get("/api/v1/scan/ok", headers=origin)
            down = await edge.get("/api/v1/scan/down", headers=origin)
    assert ok.status_code == 200 and "x-upstream" not in ok.headers
    assert ok.headers.get_list("vary") == ["Origin"]
    for reply in (ok, down):
        assert reply.headers.get_list("access-control-allow-origin") == ["https://app.example"]
        assert reply.headers["ratelimit-policy"] == '"default";q=5;w=60'
        assert reply.headers["ratelimit"].startswith('"default";r=')
    assert down.status_code == 503 and down.json()["reason"] == "upstream_connect_failed"
