"""Header hygiene through a real gateway: hop-by-hop, Connection-named, forwarding, ids, tracing."""

from __future__ import annotations

import re
import socket

from tests.gateway.conftest import Gateway
from tests.support.http import send
from tests.support.upstreams import ScriptedUpstream


def _echoed(gateway: Gateway, headers: list[tuple[str, str]]) -> dict[str, str]:
    reply = send(gateway.port, "/api/v2/scan/echo", headers)
    assert reply.status == 200
    return reply.json()["headers"]  # type: ignore[no-any-return]


def test_hop_by_hop_and_connection_named_headers_are_not_forwarded(gateway: Gateway):
    seen = _echoed(
        gateway,
        [
            ("Connection", "keep-alive, x-secret, x-forwarded-for, host"),
            ("x-secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("x-kept", "yes"),
        ],
    )
    for name in ("connection", "x-secret", "keep-alive", "te", "proxy-authorization"):
        assert name not in seen, name
    assert seen["x-kept"] == "yes"
    # Naming X-Forwarded-For in Connection cannot make the gateway drop the one it sets, and
    # naming Host cannot cost the upstream the client's host.
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"


def test_naming_the_framing_fields_in_connection_does_not_lose_the_body(gateway: Gateway):
    body = b"hello"
    for framing, payload in (
        ("content-length", [("Content-Length", "5")]),
        ("transfer-encoding", [("Transfer-Encoding", "chunked")]),
    ):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as connection:
            head = "".join(f"{n}: {v}\r\n" for n, v in payload)
            framed = body if framing == "content-length" else b"5\r\nhello\r\n0\r\n\r\n"
            connection.sendall(
                f"POST /api/v2/scan/echo HTTP/1.1\r\nHost: e\r\nConnection: {framing}\r\n"
                f"{head}\r\n".encode()
                + framed
            )
            answer = b""
            while b"body_bytes" not in answer:
                answer += connection.recv(65536)
        assert b'"body_bytes": 5' in answer, (framing, answer)


def test_forwarded_headers_from_an_untrusted_peer_are_replaced(gateway: Gateway):
    seen = _echoed(
        gateway,
        [
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("Host", "edge.example"),
        ],
    )
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "edge.example"
    # The upstream is addressed by its own host name unless preserve_host is set.
    assert seen["host"].startswith("127.0.0.1:")


def test_request_id_is_generated_when_absent_and_kept_when_sane(gateway: Gateway):
    generated = send(gateway.port, "/api/v2/scan/echo")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert generated.json()["headers"]["x-request-id"] == generated.headers["x-request-id"]

    kept = send(gateway.port, "/api/v2/scan/echo", [("x-request-id", "abc-123")])
    assert kept.headers["x-request-id"] == "abc-123"
    assert kept.json()["headers"]["x-request-id"] == "abc-123"

    replaced = send(gateway.port, "/api/v2/scan/echo", [("x-request-id", "bad id\twith spaces")])
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


def test_traceparent_is_passed_on_unchanged(gateway: Gateway):
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    seen = _echoed(gateway, [("traceparent", traceparent), ("tracestate", "a=1")])
    assert seen["traceparent"] == traceparent
    assert seen["tracestate"] == "a=1"


def test_small_body_is_sent_whole_with_its_length(gateway: Gateway):
    reply = send(gateway.port, "/api/v2/scan/echo", method="POST", body=b"x" * 1000)
    seen = reply.json()
    assert seen["body_bytes"] == 1000
    assert seen["headers"]["content-length"] == "1000"
    assert "transfer-encoding" not in seen["headers"]
    assert reply.headers["content-length"] == str(len(reply.body))


def test_errors_are_json_with_the_request_id(gateway: Gateway):
    reply = send(gateway.port, "/api/v1/nowhere/x", [("x-request-id", "req-7")])
    assert reply.status == 404
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": "not_found", "reason": "unknown_domain", "request_id": "req-7"}


def _raw(gateway: Gateway, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as connection:
        connection.sendall(request)
        chunks = []
        while True:
            try:
                data = connection.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_content_length_with_transfer_encoding_is_refused(
    gateway: Gateway, shared_upstream: ScriptedUpstream
):
    before = sum(shared_upstream.hits.values())
    answer = _raw(
        gateway,
        b"POST /api/v2/scan/echo HTTP/1.1\r\nHost: edge\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /api/v2/scan/smuggled HTTP/1.1\r\nHost: edge\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400")
    assert sum(shared_upstream.hits.values()) == before
    assert shared_upstream.hits["/smuggled"] == 0


def test_a_query_that_looks_like_a_path_does_not_change_routing(gateway: Gateway):
    reply = send(gateway.port, "/api/v1/scan/results/1?/api/v2/scan/fixed")
    assert reply.json()["path"] == "/api/v1/scan/results/1?/api/v2/scan/fixed"


def test_hop_by_hop_headers_from_the_upstream_do_not_reach_the_client(gateway: Gateway):
    reply = send(gateway.port, "/api/v2/scan/echo")
    assert "connection" not in reply.headers or reply.headers["connection"] == "keep-alive"
    assert "transfer-encoding" not in reply.headers
