"""The whole chain through a real ``doma-gateway serve``: CORS, auth, scopes, rate limits, IP
rules, request limits, header rules, and the hostile requests each must refuse or authenticate.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.chain.conftest import KEY, auth_section, get, raw_request, shop_routes
from tests.support.processes import ServerProcess, start
from tests.support.upstreams import ScriptedUpstream

ADMIN = KEY.token(sub="alice", scope="shop.read shop.admin")
READER = KEY.token(sub="bob", scp=["shop.read"])
BASE = "/api/v1/shop"


def _routes(upstream: str) -> str:
    return "gateway:\n  trusted_proxies: [127.0.0.1/32]\n" + shop_routes(
        upstream,
        policies="""\
      - cors:
          allow_origins: [https://app.example, https://*.shop.example]
          allow_headers: [authorization, content-type]
          expose_headers: [x-request-id]
          allow_credentials: true
      - auth
      - rate_limit: {requests: 1000, period_seconds: 1, limit_by: user}
      - headers:
          request: {add: {x-gateway: doma}, remove: [x-debug], rename: {x-old: x-new}}
          response: {remove: [x-upstream], add: {x-frame-options: DENY}}
""",
        routes="""\
          - {name: public, path: /public/**, auth: bypass}
          - name: admin
            path: /admin/**
            policies: [{scopes: {scopes: [shop.admin]}}]
          - name: internal
            path: /internal/**
            auth: bypass
            policies: [{ip_restriction: {allow: [10.0.0.0/8], deny: [10.6.6.0/24]}}]
          - name: upload
            path: /upload
            methods: [POST, PUT]
            policies:
              - request_limits: {max_body_bytes: 1000, max_header_bytes: 2048, methods: [POST]}
          - name: limited
            path: /limited
            policies: [{rate_limit: {requests: 2, period_seconds: 60, limit_by: user}}]
          - {name: items, path: /items/**}
""",
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream("shop") as server:
        yield server


@pytest.fixture(scope="module")
def edge_process(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("chain")
    (root / "routes.yaml").write_text(auth_section(root) + _routes(upstream.url))
    process: ServerProcess = start(
        ["serve", "--routes", str(root / "routes.yaml"), "--listen", "127.0.0.1:0",
         "--admin", "127.0.0.1:0", "--no-watch"]
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def edge(edge_process: ServerProcess) -> int:
    return edge_process.port("http")


def bearer(token: str) -> str:
    return f"authorization: Bearer {token}"


def test_a_valid_token_reaches_the_upstream_with_the_identity_and_header_rules(edge: int):
    reply = raw_request(
        edge,
        get(f"{BASE}/items/1", bearer(READER), "x-user-id: mallory", "X_User_Id: m",
            "x-user-id: eve", "x-debug: 1", "x-old: kept"),
    )  # fmt: skip
    assert reply.status == 200
    seen = reply.json()
    assert seen["path"] == f"{BASE}/items/1"
    assert seen["headers"]["x-user-id"] == "bob"
    assert "x_user_id" not in seen["headers"]
    assert seen["headers"]["x-gateway"] == "doma"
    assert "x-debug" not in seen["headers"] and seen["headers"]["x-new"] == "kept"
    assert reply.header("x-upstream") is None and reply.header("x-frame-options") == "DENY"
    assert reply.header("ratelimit-policy") == '"default";q=1000;w=1'
    assert (reply.header("ratelimit") or "").startswith('"default";r=')


def test_denials_are_json_with_error_reason_and_request_id(edge: int, upstream: ScriptedUpstream):
    before = sum(upstream.hits.values())
    reply = raw_request(edge, get(f"{BASE}/items/1", "x-request-id: deny-1"))
    assert reply.status == 401
    assert reply.json() == {"error": "unauthorized", "reason": "missing_token",
                            "request_id": "deny-1"}  # fmt: skip
    assert sum(upstream.hits.values()) == before


def test_scopes_are_required_from_scope_or_scp(edge: int):
    denied = raw_request(edge, get(f"{BASE}/admin/x", bearer(READER)))
    assert denied.status == 403
    assert denied.json()["reason"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in (denied.header("www-authenticate") or "")
    allowed = raw_request(edge, get(f"{BASE}/admin/x", bearer(ADMIN)))
    assert allowed.status == 200 and allowed.json()["path"] == f"{BASE}/admin/x"


def test_a_route_rate_limit_answers_429_with_retry_after_and_draft_headers(edge: int):
    token = KEY.token(sub="limited-user")
    first = [raw_request(edge, get(f"{BASE}/limited", bearer(token))) for _ in range(2)]
    assert [r.status for r in first] == [200, 200]
    assert first[0].header("ratelimit") == '"default";r=1;t=30'
    third = raw_request(edge, get(f"{BASE}/limited", bearer(token)))
    assert third.status == 429
    assert third.json()["reason"] == "rate_limited"
    assert 1 <= int(third.header("retry-after") or 0) <= 30
    assert third.header("ratelimit-policy") == '"default";q=2;w=60'
    # Another user has a bucket of their own.
    other = raw_request(edge, get(f"{BASE}/limited", bearer(KEY.token(sub="someone-else"))))
    assert other.status == 200


def test_cors_preflight_is_answered_at_the_gateway_before_auth(
    edge: int, upstream: ScriptedUpstream
):
    before = sum(upstream.hits.values())
    reply = raw_request(
        edge,
        get(f"{BASE}/items/1", "origin: https://app.example",
            "access-control-request-method: GET",
            "access-control-request-headers: Authorization", method="OPTIONS"),
    )  # fmt: skip
    assert reply.status == 204
    assert reply.header("access-control-allow-origin") == "https://app.example"
    assert reply.header("access-control-allow-credentials") == "true"
    assert reply.header("access-control-allow-headers") == "authorization"
    assert "GET" in (reply.header("access-control-allow-methods") or "")
    wildcard = raw_request(
        edge,
        get(f"{BASE}/items/1", "origin: https://eu.shop.example",
            "access-control-request-method: GET", method="OPTIONS"),
    )  # fmt: skip
    assert wildcard.status == 204
    refused = raw_request(
        edge,
        get(f"{BASE}/items/1", "origin: https://evil.example",
            "access-control-request-method: GET", method="OPTIONS"),
    )  # fmt: skip
    assert refused.status == 403 and refused.json()["reason"] == "cors_preflight_denied"
    assert sum(upstream.hits.values()) == before


def test_cors_headers_go_on_an_actual_response_only_for_allowed_origins(edge: int):
    allowed = raw_request(
        edge, get(f"{BASE}/items/1", bearer(READER), "origin: https://app.example")
    )
    assert allowed.header("access-control-allow-origin") == "https://app.example"
    assert allowed.header("access-control-expose-headers") == "x-request-id"
    other = raw_request(
        edge, get(f"{BASE}/items/1", bearer(READER), "origin: https://evil.example")
    )
    assert other.status == 200 and other.header("access-control-allow-origin") is None
    none = raw_request(edge, get(f"{BASE}/items/1", bearer(READER)))
    assert none.status == 200 and none.header("access-control-allow-origin") is None
    # Each answer depends on the origin, so a cache keys its copies by it.
    for reply in (allowed, other, none):
        assert reply.header("vary") == "Origin"


def test_ip_rules_use_the_rightmost_untrusted_forwarded_hop(edge: int):
    internal = f"{BASE}/internal/x"
    # The trusted proxy (127.0.0.1) says the client is 10.1.2.3.
    assert raw_request(edge, get(internal, "x-forwarded-for: 10.1.2.3")).status == 200
    # A spoofed leftmost hop is ignored: the proxy saw 203.0.113.9.
    spoofed = raw_request(edge, get(internal, "x-forwarded-for: 10.1.2.3, 203.0.113.9"))
    assert (spoofed.status, spoofed.json()["reason"]) == (403, "ip_not_allowed")
    denied = raw_request(edge, get(internal, "x-forwarded-for: 10.6.6.6"))
    assert (denied.status, denied.json()["reason"]) == (403, "ip_denied")
    # From an untrusted peer (127.0.0.2) a forged X-Forwarded-For counts for nothing.
    forged = raw_request(edge, get(internal, "x-forwarded-for: 10.1.2.3"), source="127.0.0.2")
    assert (forged.status, forged.json()["reason"]) == (403, "ip_not_allowed")


def test_request_limits_refuse_methods_headers_and_bodies(edge: int, upstream: ScriptedUpstream):
    upload = f"{BASE}/upload"
    token = bearer(READER)
    ok = raw_request(edge, get(upload, token, method="POST", body=b"x" * 1000))
    assert ok.status == 200 and ok.json()["body_bytes"] == 1000
    # Whitespace around a Content-Length value is allowed (RFC 9110 5.5).
    spaced = get(upload, token, "content-length: 3 ", method="POST") + b"abc"
    assert raw_request(edge, spaced).json()["body_bytes"] == 3
    put = raw_request(edge, get(upload, token, method="PUT", body=b"x"))
    assert (put.status, put.header("allow")) == (405, "POST")
    big = raw_request(edge, get(upload, token, method="POST", body=b"x" * 1001))
    assert (big.status, big.json()["reason"]) == (413, "body_too_large")
    headers = raw_request(edge, get(upload, token, "x-pad: " + "p" * 3000, method="POST"))
    assert (headers.status, headers.json()["reason"]) == (431, "headers_too_large")
    hits = upstream.hits[upload]
    chunk = b"100\r\n" + b"y" * 256 + b"\r\n"
    chunked = get(upload, token, "transfer-encoding: chunked", method="POST") + chunk * 8
    streamed = raw_request(edge, chunked + b"0\r\n\r\n")
    assert (streamed.status, streamed.json()["reason"]) == (413, "body_too_large")
    assert streamed.json()["request_id"]
    assert upstream.hits[upload] - hits <= 1


HOSTILE = [
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/..%2fadmin",
    "/public/%252e%252e/admin",
    "//admin",
    "/./admin",
    "/ADMIN",
    "/admin;x=1",
    "/public/..;/admin",
    "/public%5c..%5cadmin",
    "/admin%00",
    "/public/x#/../../admin",
    "/admin/x?/api/v1/shop/public/x",
]


@pytest.mark.parametrize("suffix", HOSTILE)
def test_hostile_targets_are_refused_or_authenticated(
    edge: int, upstream: ScriptedUpstream, suffix: str
):
    target = BASE + suffix
    anonymous = raw_request(edge, get(target))
    if anonymous.status == 200:
        # The server drops a fragment before routing: the public path was authorized, and
        # the upstream got that path, never what followed the '#'.
        assert "#" in suffix
        assert anonymous.json()["path"] == f"{BASE}/public/x"
        return
    assert anonymous.status in (400, 401, 404), anonymous.body
    assert set(anonymous.json()) >= {"error", "reason", "request_id"}
    reader = raw_request(edge, get(target, bearer(READER)))
    assert reader.status in (400, 403, 404), reader.body
    admin = raw_request(edge, get(target, bearer(ADMIN)))
    if admin.status == 200:
        # Authenticated: the upstream got exactly the path that was authorized.
        seen = admin.json()["path"]
        assert seen.partition("?")[0] == "/api/v1/shop/admin/x"
    else:
        assert admin.status in (400, 404)


def test_a_client_cannot_drop_the_identity_by_naming_it_in_connection(edge: int):
    reply = raw_request(
        edge, get(f"{BASE}/items/1", bearer(READER), "Connection: close, x-user-id")
    )
    assert reply.status == 200
    assert reply.json()["headers"]["x-user-id"] == "bob"
    # Naming Authorization as hop-by-hop takes it away from the whole chain: refused.
    named = raw_request(edge, get(f"{BASE}/items/1", bearer(READER), "Connection: authorization"))
    assert named.status == 401
    both = raw_request(
        edge, get(f"{BASE}/items/1", bearer(READER), "Connection: close, x-user-id, authorization")
    )
    assert (both.status, both.json()["reason"]) == (401, "missing_token")


def test_two_authorization_headers_are_refused(edge: int):
    reply = raw_request(edge, get(f"{BASE}/items/1", bearer(READER), bearer(ADMIN)))
    assert (reply.status, reply.json()["reason"]) == (401, "multiple_authorization_headers")


def test_content_length_with_transfer_encoding_never_reaches_the_upstream(
    edge: int, upstream: ScriptedUpstream
):
    before = upstream.hits[f"{BASE}/upload"]
    head = get(f"{BASE}/upload", bearer(READER), "content-length: 4",
               "transfer-encoding: chunked", method="POST")  # fmt: skip
    smuggle = head + b"0\r\n\r\nGET /x HTTP/1.1\r\n\r\n"
    try:
        reply = raw_request(edge, smuggle)
    except (ConnectionError, IndexError):
        reply = None
    if reply is not None:
        assert reply.status in (200, 400), reply.body
        if reply.status == 200:
            # Framed by Transfer-Encoding alone (RFC 9112 6.3): an empty body, nothing smuggled.
            assert reply.json()["body_bytes"] == 0
            assert upstream.hits[f"{BASE}/upload"] == before + 1
    assert upstream.hits["/x"] == 0


def test_the_admin_metrics_count_denials_by_policy_and_reason(
    edge: int, edge_process: ServerProcess
):
    raw_request(edge, get(f"{BASE}/admin/x", bearer(READER)))
    text = httpx.get(f"http://127.0.0.1:{edge_process.port('admin')}/metrics").text
    assert 'doma_gateway_policy_denials_total{policy="scopes",reason="insufficient_scope"}' in text


def test_the_admin_route_table_shows_each_routes_chain(edge_process: ServerProcess):
    table = httpx.get(f"http://127.0.0.1:{edge_process.port('admin')}/admin/routes").json()
    routes = {r["name"]: r["policies"] for r in table["domains"][0]["versions"][0]["routes"]}
    assert routes["admin"] == ["cors", "auth", "rate_limit", "headers", "scopes"]
    assert routes["limited"] == ["cors", "auth", "rate_limit", "headers"]
    assert routes["internal"] == ["cors", "auth", "rate_limit", "headers", "ip_restriction"]


def test_httpx_sees_the_same_json_denials(edge: int):
    url = f"http://127.0.0.1:{edge}{BASE}/admin/x"
    reply = httpx.get(url, headers={"authorization": f"Bearer {READER}"})
    assert reply.status_code == 403 and reply.json()["error"] == "forbidden"


def get_only_domain(name: str, upstream_url: str, policies: str = "[]") -> str:
    """A bypassed domain ``name`` with ``policies`` and one route, ``/read``, for GET only."""
    return f"""\
layers: [product]
domains:
  {name}:
    layer: product
    owner: team
    upstream: main
    auth: bypass
    policies: {policies}
    versions:
      v1:
        routes:
          - {{name: read, path: /read, methods: [GET]}}
upstreams:
  main:
    endpoints: [{upstream_url}]
"""


def test_a_preflight_to_a_route_without_cors_is_405_and_never_proxied(
    start_gateway, upstream: ScriptedUpstream
):  # type: ignore[no-untyped-def]
    gateway = start_gateway(get_only_domain("plain", upstream.url))
    before = sum(upstream.hits.values())
    reply = raw_request(
        gateway.port,
        get("/api/v1/plain/read", "origin: https://app.example",
            "access-control-request-method: GET", method="OPTIONS"),
    )  # fmt: skip
    assert (reply.status, reply.header("allow")) == (405, "GET, HEAD")
    assert reply.json()["reason"] == "method_not_allowed"
    assert sum(upstream.hits.values()) == before


def test_options_naming_a_method_without_origin_is_no_preflight(
    start_gateway, upstream: ScriptedUpstream
):  # type: ignore[no-untyped-def]
    gateway = start_gateway(
        get_only_domain("shop", upstream.url, "[{cors: {allow_origins: [https://app.example]}}]")
    )
    before = sum(upstream.hits.values())
    plain = raw_request(
        gateway.port,
        get("/api/v1/shop/read", "access-control-request-method: GET", method="OPTIONS"),
    )
    assert (plain.status, plain.json()["reason"]) == (405, "method_not_allowed")
    preflight = raw_request(
        gateway.port,
        get("/api/v1/shop/read", "origin: https://app.example",
            "access-control-request-method: GET", method="OPTIONS"),
    )  # fmt: skip
    assert preflight.status == 204
    assert sum(upstream.hits.values()) == before
