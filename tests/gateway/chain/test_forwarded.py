"""What a trusted proxy forwards, through a real gateway: the IP rules and the upstream's
``X-Forwarded-*`` read the same client, whatever the listener's address family."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.chain.conftest import get, raw_request, shop_routes
from tests.support.processes import ServerProcess, start
from tests.support.upstreams import ScriptedUpstream

BASE = "/api/v1/shop"


def _routes(upstream: str) -> str:
    return "gateway:\n  trusted_proxies: [127.0.0.1/32]\n" + shop_routes(
        upstream,
        domain="    auth: bypass\n",
        policies="      - ip_restriction: {deny: [10.9.9.0/24]}\n",
        routes="          - {name: items, path: /**}\n",
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream("shop") as server:
        yield server


def _serve(root: Path, upstream: ScriptedUpstream, listen: str) -> ServerProcess:
    (root / "routes.yaml").write_text(_routes(upstream.url))
    return start(
        ["serve", "--routes", str(root / "routes.yaml"), "--listen", listen,
         "--admin", "127.0.0.1:0", "--no-watch"]
    )  # fmt: skip


@pytest.fixture(
    scope="module", params=["127.0.0.1:0", "[::ffff:127.0.0.1]:0"], ids=["v4", "mapped"]
)
def edge(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: ScriptedUpstream,
) -> Iterator[int]:
    """A gateway on an IPv4 listener, and one on an IPv6 socket where IPv4 peers such as the
    trusted 127.0.0.1 appear as ``::ffff:127.0.0.1``."""
    process = _serve(tmp_path_factory.mktemp("forwarded"), upstream, request.param)
    yield process.port("http")
    process.stop()


def test_a_trusted_proxys_forwarded_headers_reach_the_upstream_extended(edge: int):
    reply = raw_request(
        edge, get(f"{BASE}/items/1", "x-forwarded-for: 5.6.7.8", "x-forwarded-proto: https")
    )
    assert reply.status == 200
    seen = reply.json()["headers"]
    assert seen["x-forwarded-for"] == "5.6.7.8, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"


def test_ip_rules_judge_the_client_the_trusted_proxy_forwards(edge: int):
    denied = raw_request(edge, get(f"{BASE}/items/1", "x-forwarded-for: 10.9.9.9"))
    assert (denied.status, denied.json()["reason"]) == (403, "ip_denied")


def test_naming_the_forwarded_headers_in_connection_cannot_hide_the_client(edge: int):
    """A client behind a proxy that passes its ``Connection`` on cannot make the gateway drop
    the proxy's ``X-Forwarded-For`` and judge the proxy's own address instead."""
    named = "connection: keep-alive, X-Forwarded-For, x-forwarded-proto, x-forwarded-host"
    denied = raw_request(edge, get(f"{BASE}/items/1", named, "x-forwarded-for: 10.9.9.9"))
    assert (denied.status, denied.json()["reason"]) == (403, "ip_denied")
    allowed = raw_request(
        edge,
        get(f"{BASE}/items/1", named, "x-forwarded-for: 5.6.7.8", "x-forwarded-proto: https"),
    )
    assert allowed.status == 200
    seen = allowed.json()["headers"]
    assert seen["x-forwarded-for"] == "5.6.7.8, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert "connection" not in seen
