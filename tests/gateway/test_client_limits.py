"""What a client may send before any route sees it, through a real gateway: the size of a request
head, the time to send it and a body, Host, the HTTP version, trailers. Every refusal is JSON
with a request id, and the gateway keeps serving."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.gateway.conftest import Gateway, StartGateway, routes_text
from tests.support.upstreams import ScriptedUpstream

LIMITS = """\
gateway:
  max_request_head_bytes: 2048
  client_head_seconds: 0.5
  client_body_idle_seconds: 0.5
"""
PATH = "/api/v1/image/echo"


@pytest.fixture
def edge(start_gateway: StartGateway, upstream: ScriptedUpstream) -> Iterator[Gateway]:
    yield start_gateway(routes_text([upstream.url]) + LIMITS)


def _exchange(gateway: Gateway, *parts: bytes, pause: float = 0.0, wait: float = 3.0) -> bytes:
    """Send ``parts`` (``pause`` seconds apart), then read until the gateway closes or answers."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=wait) as connection:
        for index, part in enumerate(parts):
            if index and pause:
                time.sleep(pause)
            try:
                connection.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the gateway has answered and closed: read what it said
        chunks = []
        try:
            while data := connection.recv(65536):
                chunks.append(data)
        except (TimeoutError, ConnectionResetError):
            pass  # a reset after the answer: what arrived before it counts
    return b"".join(chunks)


def _refusal(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


def _assert_json_refusal(answer: bytes, status: int, reason: str) -> None:
    got, headers, body = _refusal(answer)
    assert got == status, answer
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    payload = json.loads(body)
    assert payload["reason"] == reason
    assert payload["request_id"] == headers["x-request-id"]


def _still_serving(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert client.get(PATH).status_code == 200


def test_a_head_over_the_cap_is_431_before_it_is_buffered(edge: Gateway):
    pad = b"x-pad: " + b"p" * 3000 + b"\r\n"
    # Whole in one read, and trickled over several.
    head = b"GET " + PATH.encode() + b" HTTP/1.1\r\nhost: e\r\n" + pad + b"\r\n"
    _assert_json_refusal(_exchange(edge, head), 431, "headers_too_large")
    parts = [head[i : i + 500] for i in range(0, len(head), 500)]
    _assert_json_refusal(_exchange(edge, *parts, pause=0.02), 431, "headers_too_large")
    # Just under the cap passes.
    fits = b"GET " + PATH.encode() + b" HTTP/1.1\r\nhost: e\r\nx-pad: " + b"p" * 1900 + b"\r\n\r\n"
    assert _exchange(edge, fits, wait=1).startswith(b"HTTP/1.1 200")
    # A megabyte of headers is cut off at the cap, not read to the end: the gateway answers and
    # closes while the client is still sending (which may see the close as a reset instead).
    flood = b"GET " + PATH.encode() + b" HTTP/1.1\r\nhost: e\r\n" + pad * 350
    answer = _exchange(edge, flood)
    if answer:
        _assert_json_refusal(answer, 431, "headers_too_large")
    _still_serving(edge)


def test_a_head_sent_too_slowly_is_408_and_a_silent_connection_is_closed(edge: Gateway):
    started = time.monotonic()
    answer = _exchange(edge, b"GET " + PATH.encode() + b" HTTP/1.1\r\n", b"host: e\r\n", pause=0.2)
    _assert_json_refusal(answer, 408, "request_timeout")
    assert time.monotonic() - started < 2.5
    assert _exchange(edge) == b""  # connected, sent nothing: closed within the head time
    _still_serving(edge)


def test_a_body_that_stops_arriving_is_408(edge: Gateway, upstream: ScriptedUpstream):
    before = upstream.hits["/echo"]
    head = b"POST " + PATH.encode() + b" HTTP/1.1\r\nhost: e\r\ncontent-length: 100\r\n\r\n"
    answer = _exchange(edge, head + b"0123456789")
    status, _, body = _refusal(answer)
    # The answer is the gateway's: 408 while it waited for the body, not an upstream's.
    assert status == 408, answer
    assert json.loads(body)["reason"] == "request_timeout"
    assert upstream.hits["/echo"] == before
    _still_serving(edge)


@pytest.mark.parametrize("size", [3_000, 100_000])
def test_a_body_is_never_counted_as_head(edge: Gateway, size: int):
    # Head and body in one write, so the gateway reads them together: only the head is capped.
    body = b"b" * size
    head = (
        f"POST /api/v1/image/upload HTTP/1.1\r\nhost: e\r\ncontent-length: {size}\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    status, _, reply = _refusal(_exchange(edge, head + body))
    assert status == 200, reply
    assert json.loads(reply)["received"] == size


def test_an_answer_may_take_longer_than_the_client_head_time(edge: Gateway):
    # client_head_seconds is 0.5 here: it bounds what the client sends, never the answer.
    with edge.client() as client:
        assert client.get("/api/v1/image/slow/1.2").status_code == 200
        with client.stream("GET", "/api/v1/image/sse/6", params={"gap": "0.25"}) as events:
            assert events.status_code == 200
            received = b"".join(events.iter_raw())
        assert received.count(b"data:") == 6
        # The connection is still good for the next request.
        assert client.get(PATH).status_code == 200


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (b"GET /api/v1/image/echo HTTP/1.1\r\n\r\n", 400, "invalid_host"),
        (b"GET /api/v1/image/echo HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", 400, "invalid_host"),
        (
            b"POST /api/v1/image/echo HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n"
            b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "invalid_http_request",
        ),
        (b"GET /api/v1/image/echo HTTP/1.1\r\nhost: a\r\nbad header\r\n\r\n", 400,
         "invalid_http_request"),
        (b"POST /api/v1/image/echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n"
         b"\r\n0\r\n\r\n", 501, "unsupported_transfer_coding"),
    ],
    ids=["no host", "two hosts", "length and chunked", "malformed header", "gzip coding"],
)  # fmt: skip
def test_malformed_requests_get_a_json_refusal(
    edge: Gateway, upstream: ScriptedUpstream, head: bytes, status: int, reason: str
):
    before = sum(upstream.hits.values())
    _assert_json_refusal(_exchange(edge, head), status, reason)
    assert sum(upstream.hits.values()) == before
    _still_serving(edge)


def test_an_http_1_0_request_needs_no_host(edge: Gateway):
    answer = _exchange(edge, b"GET " + PATH.encode() + b" HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer


def test_trailer_fields_never_become_request_headers(edge: Gateway):
    request = (
        b"POST " + PATH.encode() + b" HTTP/1.1\r\nhost: e\r\ntransfer-encoding: chunked\r\n"
        b"trailer: x-injected\r\n\r\n3\r\nabc\r\n0\r\nx-injected: yes\r\n"
        b"authorization: Bearer smuggled\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", edge.port), timeout=3) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = connection.recv(65536)
            if not data:
                break
            answer += data
    status, _, body = _refusal(answer)
    assert status == 200, answer
    seen = json.loads(body)["headers"]
    assert "x-injected" not in seen and "authorization" not in seen


def _chunked_upload(*parts: bytes) -> list[bytes]:
    head = b"POST /api/v1/image/upload HTTP/1.1\r\nhost: e\r\ntransfer-encoding: chunked\r\n\r\n"
    return [head + parts[0], *parts[1:]]


def test_trailer_fields_over_the_head_cap_are_431_not_buffered(edge: Gateway):
    # Each piece is its own read: the trailer grows past the cap (2,048 here) after the body.
    field = b"x-t: " + b"a" * 995 + b"\r\n"
    parts = _chunked_upload(b"5\r\nhello\r\n0\r\n", field, field, field, field, b"\r\n")
    _assert_json_refusal(_exchange(edge, *parts, pause=0.05), 431, "headers_too_large")
    # One field too long to end, and an endless chunk extension, the same.
    endless = [b"a" * 1000] * 4
    parts = _chunked_upload(b"5\r\nhello\r\n0\r\nx-t: ", *endless)
    _assert_json_refusal(_exchange(edge, *parts, pause=0.05), 431, "headers_too_large")
    parts = _chunked_upload(b"5;ext=", *endless)
    _assert_json_refusal(_exchange(edge, *parts, pause=0.05), 431, "headers_too_large")
    _still_serving(edge)


def test_a_body_of_many_small_chunks_is_never_counted_as_head(edge: Gateway):
    # 6 bytes of framing per byte of data: 30 kB of framing in all, far past the cap, but
    # never 2,048 bytes without data between.
    chunks = b"1\r\nb\r\n" * 1000
    parts = _chunked_upload(chunks, chunks, chunks, chunks, chunks + b"0\r\n\r\n")
    status, _, reply = _refusal(_exchange(edge, *parts, pause=0.02))
    assert status == 200, reply
    assert json.loads(reply)["received"] == 5000


def test_a_request_asking_to_upgrade_is_served_plain_with_the_next_one_in_the_same_read(
    edge: Gateway, upstream: ScriptedUpstream
):
    # No upgrade is served: the first is answered as a plain request, without its Upgrade, and
    # the request pipelined behind it in the same write is answered too, in order.
    first = b"GET " + PATH.encode() + b"?n=1 HTTP/1.1\r\nhost: e\r\nconnection: upgrade\r\n"
    second = b"GET " + PATH.encode() + b"?n=2 HTTP/1.1\r\nhost: e\r\nconnection: close\r\n\r\n"
    answer = _exchange(edge, first + b"upgrade: h2c\r\n\r\n" + second)
    assert answer.count(b"HTTP/1.1 200") == 2, answer
    replies = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert [reply["path"] for reply in replies] == [
        f"{PATH[len('/api/v1/image') :]}?n={n}" for n in (1, 2)
    ]
    assert "upgrade" not in replies[0]["headers"]
    assert "Unsupported upgrade" not in edge.process.stderr()
