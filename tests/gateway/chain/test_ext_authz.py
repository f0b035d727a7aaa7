"""Remote auth: the gateway asks a real ``doma-gateway authz`` over Envoy's ext-authz gRPC and
applies its answer as Envoy would: identity headers set, client copies removed, denials with
the server's status, headers and body, bypass rules decided by the server, fail-closed errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.chain.conftest import KEY, auth_section, ext_authz_routes, get, raw_request
from tests.support.processes import ServerProcess, start
from tests.support.services import free_port
from tests.support.upstreams import ScriptedUpstream

BASE = "/api/v1/shop"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream("remote") as server:
        yield server


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("authz")
    (root / "auth.yaml").write_text(auth_section(root, bypass=(f"{BASE}/open/**",)))
    process = start(
        ["authz", "--routes", str(root / "auth.yaml"), "--listen", "127.0.0.1:0",
         "--no-metrics", "--no-admin"]
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream, authz: ServerProcess
) -> Iterator[int]:
    root = tmp_path_factory.mktemp("remote-edge")
    grpc = f"127.0.0.1:{authz.port('grpc')}"
    (root / "routes.yaml").write_text(ext_authz_routes(upstream.url, grpc))
    process = start(["serve", "--routes", str(root / "routes.yaml"), "--listen", "127.0.0.1:0",
                     "--admin", "127.0.0.1:0", "--no-watch"])  # fmt: skip
    yield process.port("http")
    process.stop()


def test_an_allowed_request_gets_the_identity_the_server_sets(edge: int):
    token = KEY.token(sub="carol")
    reply = raw_request(
        edge,
        get(f"{BASE}/items/1", f"authorization: Bearer {token}", "x-user-id: mallory",
            "x_user_id: m"),
    )  # fmt: skip
    assert reply.status == 200, reply.body
    seen = reply.json()
    assert seen["headers"]["x-user-id"] == "carol"
    assert "x_user_id" not in seen["headers"]
    assert seen["path"] == f"{BASE}/items/1"


def test_a_denial_carries_the_servers_status_challenge_and_reason(
    edge: int, upstream: ScriptedUpstream
):
    before = sum(upstream.hits.values())
    reply = raw_request(edge, get(f"{BASE}/items/1", "x-request-id: remote-1"))
    assert reply.status == 401
    assert reply.json() == {"error": "unauthorized", "reason": "missing_token",
                            "request_id": "remote-1"}  # fmt: skip
    assert (reply.header("www-authenticate") or "").startswith("Bearer")
    expired = raw_request(edge, get(f"{BASE}/items/1", f"authorization: Bearer {KEY.token(exp=1)}"))
    assert (expired.status, expired.json()["reason"]) == (401, "token_expired")
    assert sum(upstream.hits.values()) == before


def test_bypass_rules_are_the_servers_and_identity_is_still_stripped(edge: int):
    reply = raw_request(edge, get(f"{BASE}/open/x", "x-user-id: mallory"))
    assert reply.status == 200
    assert "x-user-id" not in reply.json()["headers"]
    # An ambiguous spelling of a bypass path never reaches the server's bypass rule.
    assert raw_request(edge, get(f"{BASE}/open/../items/1")).status == 400


def test_scopes_see_the_claims_the_server_verified(edge: int):
    reader = KEY.token(sub="dave", scope="shop.read")
    admin = KEY.token(sub="erin", scope="shop.admin")
    denied = raw_request(edge, get(f"{BASE}/admin/x", f"authorization: Bearer {reader}"))
    assert (denied.status, denied.json()["reason"]) == (403, "insufficient_scope")
    allowed = raw_request(edge, get(f"{BASE}/admin/x", f"authorization: Bearer {admin}"))
    assert allowed.status == 200


def test_an_unreachable_server_fails_closed_unless_failure_mode_allow(
    start_gateway, upstream: ScriptedUpstream
):  # type: ignore[no-untyped-def]
    dead = f"127.0.0.1:{free_port()}"
    closed = start_gateway(ext_authz_routes(upstream.url, dead))
    reply = raw_request(closed.port, get(f"{BASE}/items/1"))
    assert (reply.status, reply.json()["reason"]) == (403, "ext_authz_error")
    opened = start_gateway(
        ext_authz_routes(upstream.url, dead, "\n            failure_mode_allow: true"),
        filename="open.yaml",
    )
    reply = raw_request(opened.port, get(f"{BASE}/items/1", "x-user-id: mallory"))
    assert reply.status == 200
    assert "x-user-id" not in reply.json()["headers"]


def test_the_check_request_is_what_envoy_sends(tmp_path: Path):
    from envoy.service.auth.v3 import external_auth_pb2

    from authz.grpc_check import check_input
    from gateway.policies.ext_authz import check_request

    scope = {
        "type": "http", "method": "GET", "scheme": "http", "http_version": "1.1",
        "path": "/api/v1/shop/a b", "raw_path": b"/api/v1/shop/a%20b", "query_string": b"x=1",
        "headers": [(b"host", b"edge"), (b"authorization", b"Bearer a"),
                    (b"authorization", b"Bearer b")],
        "client": ("10.0.0.9", 5555), "server": ("127.0.0.1", 8080),
    }  # fmt: skip
    request = check_request(scope, "10.0.0.9", "rid")
    parsed = external_auth_pb2.CheckRequest.FromString(request.SerializeToString())
    checked = check_input(parsed)
    assert checked.path == "/api/v1/shop/a%20b?x=1"
    assert checked.headers["authorization"] == "Bearer a,Bearer b"
    assert checked.headers[":authority"] == "edge"
    assert parsed.attributes.source.address.socket_address.address == "10.0.0.9"
    assert parsed.attributes.request.http.id == "rid"
    del tmp_path
