"""CORS through a real gateway: configured origins match what browsers send, and the answers
the gateway writes itself (503, 504, 413) carry the CORS and RateLimit headers the route's
policies add, like the upstream's answers: a page from an allowed origin can read the error and
its Retry-After."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.chain.conftest import get, raw_request, shop_routes
from tests.support.processes import ServerProcess, start
from tests.support.services import refused_port
from tests.support.upstreams import ScriptedUpstream

BASE = "/api/v1/shop"
ORIGIN = "origin: https://app.example"


def _routes(upstream: str, refused: int) -> str:
    return shop_routes(
        upstream,
        domain="    auth: bypass\n",
        policies="""\
      - cors:
          allow_origins: [https://app.example, https://Admin.Shop.Example:443]
          expose_headers: [retry-after, ratelimit]
          allow_credentials: true
      - rate_limit: {requests: 1000, period_seconds: 60}
""",
        routes="""\
          - {name: dead, path: /dead, upstream: dead}
          - {name: slow, path: /slow/*, rewrite: {prefix: /}}
          - name: body
            path: /body
            methods: [POST]
            policies: [{request_limits: {max_body_bytes: 100}}]
          - {name: items, path: /items/**}
""",
        main="    timeouts: {connect_seconds: 0.5, read_seconds: 0.3, total_seconds: 0.5}\n",
        upstreams=f"""\
  dead:
    endpoints: [http://127.0.0.1:{refused}]
    timeouts: {{connect_seconds: 0.5, total_seconds: 1}}
    circuit_breaker: {{failures: 1, reset_seconds: 60}}
    outlier_detection: false
""",
    )


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("cors-errors")
    with ScriptedUpstream("shop") as upstream, refused_port() as refused:
        (root / "routes.yaml").write_text(_routes(upstream.url, refused))
        process: ServerProcess = start(
            ["serve", "--routes", str(root / "routes.yaml"), "--listen", "127.0.0.1:0",
             "--admin", "127.0.0.1:0", "--no-watch"]
        )  # fmt: skip
        yield process.port("http")
        process.stop()


def _chunked_body(size: int) -> bytes:
    return b"".join(b"1\r\na\r\n" for _ in range(size)) + b"0\r\n\r\n"


def _assert_readable_by_the_page(reply_headers: dict[str, str]) -> None:
    assert reply_headers.get("access-control-allow-origin") == "https://app.example"
    assert reply_headers.get("access-control-allow-credentials") == "true"
    assert reply_headers.get("access-control-expose-headers") == "retry-after, ratelimit"
    assert reply_headers.get("vary") == "Origin"
    assert reply_headers.get("ratelimit-policy") == '"default";q=1000;w=60'
    assert (reply_headers.get("ratelimit") or "").startswith('"default";r=')


def test_gateway_errors_carry_the_cors_and_rate_limit_headers_of_the_route(edge: int):
    refused = raw_request(edge, get(f"{BASE}/dead", ORIGIN))
    assert (refused.status, refused.json()["reason"]) == (503, "upstream_connect_failed")
    # The breaker opened on that failure: the next answer comes from it, with Retry-After.
    breaker = raw_request(edge, get(f"{BASE}/dead", ORIGIN))
    assert (breaker.status, breaker.json()["reason"]) == (503, "circuit_open")
    assert breaker.header("retry-after") is not None
    timeout = raw_request(edge, get(f"{BASE}/slow/2", ORIGIN))
    assert timeout.status == 504
    too_large = raw_request(
        edge,
        get(f"{BASE}/body", ORIGIN, "transfer-encoding: chunked", method="POST")
        + _chunked_body(500),
    )
    assert (too_large.status, too_large.json()["reason"]) == (413, "body_too_large")
    for reply in (refused, breaker, timeout, too_large):
        _assert_readable_by_the_page(dict(reply.headers))
        assert [name for name, _ in reply.headers].count("access-control-allow-origin") == 1


def test_gateway_errors_for_another_origin_carry_no_cors_header_but_vary(edge: int):
    reply = raw_request(edge, get(f"{BASE}/slow/2", "origin: https://evil.example"))
    assert reply.status == 504
    assert reply.header("access-control-allow-origin") is None
    assert reply.header("vary") == "Origin"


def test_an_origin_configured_in_capitals_or_with_its_default_port_matches_the_browsers(edge: int):
    reply = raw_request(edge, get(f"{BASE}/items/1", "origin: https://admin.shop.example"))
    assert reply.status == 200
    assert reply.header("access-control-allow-origin") == "https://admin.shop.example"
