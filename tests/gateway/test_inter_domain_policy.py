"""The layer rule at the edge: callers named by a trusted proxy's XFCC or a service token."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from authz.domain_graph import DomainGraph, DomainNode
from authz.inter_domain import InterDomainRule, InterDomainSettings
from doma_gateway.echo import EchoServer
from gateway.policies.auth import CLAIMS
from gateway.policies.denial import Denial
from gateway.policies.inter_domain import REASONS, InterDomainPolicy
from gateway.policies.metrics import PolicyMetrics
from tests.support.http import send
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey

KEY = SigningKey()
GRAPH = DomainGraph(
    ("infrastructure", "business-logic"),
    (
        DomainNode("image", "infrastructure"),
        DomainNode("character", "business-logic", ("image",)),
        DomainNode("scan", "business-logic", ("character",)),
        DomainNode("chat", "business-logic"),
    ),
)


def xfcc(namespace: str) -> str:
    return (
        "By=spiffe://cluster.local/ns/doma-system/sa/gateway;Hash=00;"
        f"URI=spiffe://cluster.local/ns/{namespace}/sa/{namespace}-api"
    )


class Seen:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def run_policy(
    settings: InterDomainSettings,
    *,
    peer: str = "127.0.0.1",
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    claims: dict[str, Any] | None = None,
    target: str = "character",
) -> tuple[int, Seen, list[tuple[str, str, str, bool]]]:
    observed: list[tuple[str, str, str, bool]] = []
    rule = InterDomainRule(GRAPH, settings, lambda *args: observed.append(args))
    metrics = PolicyMetrics(CollectorRegistry())
    denials = {r: Denial(metrics, "inter_domain", 403, r) for r in REASONS}
    inner = Seen()
    policy = InterDomainPolicy(inner, rule=rule, target=target, denials=denials)
    scope = {
        "type": "http",
        "method": "GET",
        "headers": list(headers),
        "client": (peer, 40000),
        "doma.request_id": "r1",
        CLAIMS: claims,
    }
    sent: list[dict[str, Any]] = []

    async def capture(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await policy(scope, receive, capture)
    return sent[0]["status"], inner, observed


TRUSTING = InterDomainSettings(trusted_proxies=("127.0.0.0/8",), token_claim="domain")


async def test_xfcc_from_an_untrusted_peer_names_nobody():
    status, inner, _ = await run_policy(
        TRUSTING, peer="192.0.2.7", headers=[(b"x-forwarded-client-cert", xfcc("chat").encode())]
    )
    assert (status, inner.calls) == (200, 1)


async def test_xfcc_from_a_trusted_proxy_names_the_caller():
    status, inner, seen = await run_policy(
        TRUSTING, headers=[(b"x-forwarded-client-cert", xfcc("chat").encode())]
    )
    assert (status, inner.calls) == (403, 0)
    assert seen == [("chat", "character", "undeclared_dependency", True)]


async def test_a_service_tokens_claim_names_the_caller():
    status, _, seen = await run_policy(TRUSTING, claims={"sub": "svc", "domain": "image"})
    assert status == 403
    assert seen == [("image", "character", "layer_violation", True)]
    status, _, _ = await run_policy(TRUSTING, claims={"sub": "user-1"})
    assert status == 200


async def test_report_mode_forwards_and_reports():
    settings = InterDomainSettings(mode="report", token_claim="domain")
    status, inner, seen = await run_policy(settings, claims={"domain": "chat"})
    assert (status, inner.calls) == (200, 1)
    assert seen == [("chat", "character", "undeclared_dependency", False)]


def routes(echo_port: int) -> str:
    pem = textwrap.indent(KEY.public_pem.decode(), " " * 8)
    return f"""\
layers: [infrastructure, business-logic]
inter_domain:
  mode: enforce
  trusted_proxies: [127.0.0.1/32]
  token_claim: domain
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      key_id: {KEY.kid}
      public_key: |
{pem}
domains:
  image:
    layer: infrastructure
    owner: team-image
    upstream: echo
    versions:
      v1:
        routes:
          - {{name: images, path: /images/*, auth: bypass}}
  character:
    layer: business-logic
    owner: team-character
    depends_on: [image]
    upstream: echo
    versions:
      v1:
        routes:
          - {{name: catalog, path: /catalog/**, auth: bypass}}
          - {{name: mine, path: /me}}
  scan:
    layer: business-logic
    owner: team-scan
    depends_on: [character]
    upstream: echo
    versions:
      v1:
        routes:
          - {{name: scans, path: /scans}}
  chat:
    layer: business-logic
    owner: team-chat
    upstream: echo
    versions:
      v1:
        routes:
          - {{name: rooms, path: /rooms/**}}
upstreams:
  echo:
    endpoints: [http://127.0.0.1:{echo_port}]
"""


@pytest.fixture
def edge(start_gateway) -> Iterator[Any]:
    echo = EchoServer().start()
    try:
        yield start_gateway(routes(echo.port))
    finally:
        echo.stop()


def test_the_gateway_enforces_the_layer_rule_for_xfcc_and_token_callers(edge):
    def call(path: str, caller: str | None = None, token: str | None = None) -> tuple[int, Any]:
        headers = []
        if caller is not None:
            headers.append(("x-forwarded-client-cert", xfcc(caller)))
        if token is not None:
            headers.append(("authorization", f"Bearer {token}"))
        reply = send(edge.port, path, headers)
        return reply.status, json.loads(reply.body) if reply.body else None

    assert call("/api/v1/character/catalog/x", "scan")[0] == 200
    status, body = call("/api/v1/character/catalog/x", "chat")
    assert (status, body["reason"]) == (403, "undeclared_dependency")
    assert body["request_id"]
    status, body = call("/api/v1/character/catalog/x", "image")
    assert (status, body["reason"]) == (403, "layer_violation")
    # A user's request (no mesh identity, no domain claim) is no inter-domain call.
    assert call("/api/v1/character/me", token=KEY.token())[0] == 200
    status, body = call("/api/v1/character/me", token=KEY.token(domain="chat"))
    assert (status, body["reason"]) == (403, "undeclared_dependency")
    # Auth runs first: without a token the answer is 401, whoever calls.
    assert call("/api/v1/character/me", "chat")[0] == 401
    metrics = send(int(edge.admin.rpartition(":")[2]), "/metrics").body.decode()
    assert (
        'doma_gateway_inter_domain_violations_total{action="denied",caller="chat",'
        'reason="undeclared_dependency",target="character"} 2.0'
    ) in metrics


def test_the_caller_is_the_last_element_of_every_xfcc_line_read_with_its_quoting(edge):
    path = "/api/v1/character/catalog/x"
    # A client's own line first, the trusted proxy's appended line last: the proxy's counts,
    # as in the same value on one line joined with ','.
    lines = [("x-forwarded-client-cert", xfcc("scan")), ("x-forwarded-client-cert", xfcc("chat"))]
    reply = send(edge.port, path, lines)
    assert (reply.status, reply.json()["reason"]) == (403, "undeclared_dependency")
    # A quoted Subject holding ',' or ';' and a URI of its own is one value, not an element.
    for separator in (",", ";"):
        forged = (
            f'Hash=ab;Subject="CN=x{separator}URI=spiffe://cluster.local/ns/scan/sa/s";'
            "URI=spiffe://cluster.local/ns/chat/sa/c"
        )
        reply = send(edge.port, path, [("x-forwarded-client-cert", forged)])
        assert (reply.status, reply.json()["reason"]) == (403, "undeclared_dependency")


def test_xfcc_from_a_peer_the_gateway_does_not_trust_never_reaches_the_upstream(edge):
    # The inter-domain rule trusts this peer's XFCC; gateway.trusted_proxies does not list it,
    # so the upstream, which might believe the header, never sees it.
    reply = send(
        edge.port, "/api/v1/character/catalog/x", [("x-forwarded-client-cert", xfcc("scan"))]
    )
    assert reply.status == 200
    assert "x-forwarded-client-cert" not in reply.json()["headers"]


def test_workers_validate_and_enforce_a_route_that_places_the_rule_itself(start_gateway):
    echo = EchoServer().start()
    try:
        text = routes(echo.port).replace(
            "- {name: catalog, path: /catalog/**, auth: bypass}",
            "- {name: catalog, path: /catalog/**, auth: bypass, policies: [inter_domain]}",
        )
        gateway = start_gateway(text, "--workers", "2")
        headers = [("x-forwarded-client-cert", xfcc("chat"))]
        reply = send(gateway.port, "/api/v1/character/catalog/x", headers)
        assert (reply.status, reply.json()["reason"]) == (403, "undeclared_dependency")
        headers = [("x-forwarded-client-cert", xfcc("scan"))]
        assert send(gateway.port, "/api/v1/character/catalog/x", headers).status == 200
    finally:
        echo.stop()
