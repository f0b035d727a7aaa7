"""An upstream's framing through a real gateway: interim answers and bytes after an answer never
reach another client (each exchange ends at its own final answer)."""

from __future__ import annotations

import json
import re
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.gateway.conftest import StartGateway, routes_text
from tests.support.http import send

SEEN: list[tuple[str, str, bytes]] = []


class _Handler(socketserver.StreamRequestHandler):
    """``/interim/<who>``: 100 Continue, then 300 ms later a 201 with ``<who>``'s cookie.
    ``/trailing``: a 200 followed, in the same write, by a second answer nobody asked for.
    ``/late/<status>``: a 204 or 304, then 200 ms later a body anyway, shaped as an answer.
    ``/drop-later/<x>``: recorded in ``SEEN``; answered on a connection's first request only,
    later ones are read whole and the connection closes without an answer.
    ``/head-with-body``: an answer to HEAD with its body, which is shaped as an answer.
    ``/cut/length``, ``/cut/chunked``: 100 kB of a longer body, then the connection closes.
    Anything else: a plain 200 naming the path."""

    def handle(self) -> None:
        served = 0
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline()
                if not line:
                    return
                head += line
            method, path = head.split(b" ")[0].decode(), head.split(b" ")[1].decode()
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            body = self.rfile.read(int(length.group(1))) if length else b""
            served += 1
            if path.startswith("/drop-later/"):
                SEEN.append((method, path, body))
                if served > 1:
                    return  # read the whole request, then died without a word
                self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nserved")
            elif path.startswith("/interim/"):
                who = path.rsplit("/", 1)[1].encode()
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.wfile.flush()
                time.sleep(0.3)
                body = b"answer for " + who
                self.wfile.write(
                    b"HTTP/1.1 201 Created\r\nset-cookie: session=" + who + b"\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            elif path.startswith("/cut/"):
                part = b"c" * 100_000
                if path == "/cut/length":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n" + part)
                else:
                    self.wfile.write(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                        + b"%x\r\n" % len(part)
                        + part
                        + b"\r\n"
                    )
                self.wfile.flush()
                return
            elif path.startswith("/late/"):
                status = path.rsplit("/", 1)[1].encode()
                self.wfile.write(b"HTTP/1.1 " + status + b" Nothing\r\n\r\n")
                self.wfile.flush()
                time.sleep(0.2)
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nset-cookie: session=stray\r\n"
                    b"content-length: 5\r\n\r\nstray"
                )
            elif path == "/head-with-body":
                # A HEAD answered with a body, in the same write, shaped as a second answer.
                smuggled = (
                    b"HTTP/1.1 200 OK\r\nset-cookie: session=stray\r\ncontent-length: 0\r\n\r\n"
                )
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: "
                    + str(len(smuggled)).encode() + b"\r\n\r\n" + smuggled
                )  # fmt: skip
            elif path == "/trailing":
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
                    b"HTTP/1.1 200 OK\r\nset-cookie: session=stray\r\n"
                    b"content-length: 5\r\n\r\nstray"
                )
            else:
                body = path.encode()
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body
                )  # fmt: skip
            self.wfile.flush()


@pytest.fixture
def framing_upstream() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_interim_answer_is_not_the_final_one_and_never_reaches_another_client(
    start_gateway: StartGateway, framing_upstream: str
):
    gateway = start_gateway(routes_text([framing_upstream]))
    with ThreadPoolExecutor(2) as pool:
        alice = pool.submit(send, gateway.port, "/api/v1/image/interim/alice")
        time.sleep(0.1)
        bob = pool.submit(send, gateway.port, "/api/v1/image/plain/bob")
        first, second = alice.result(), bob.result()
    assert (first.status, first.body) == (201, b"answer for alice")
    assert first.headers["set-cookie"] == "session=alice"
    assert (second.status, second.body) == (200, b"/plain/bob")
    assert "set-cookie" not in second.headers
    # Later requests reuse the pooled connections and still get their own answers.
    for index in range(5):
        reply = send(gateway.port, f"/api/v1/image/plain/{index}")
        assert (reply.status, reply.body) == (200, f"/plain/{index}".encode())


def test_bytes_after_an_answer_are_dropped_with_their_connection(
    start_gateway: StartGateway, framing_upstream: str
):
    gateway = start_gateway(routes_text([framing_upstream]))
    first = send(gateway.port, "/api/v1/image/trailing")
    assert (first.status, first.body) == (200, b"hello")
    for index in range(5):
        reply = send(gateway.port, f"/api/v1/image/plain/{index}")
        assert (reply.status, reply.body) == (200, f"/plain/{index}".encode())
        assert "set-cookie" not in reply.headers


@pytest.mark.parametrize("status", [204, 304])
def test_a_body_written_late_after_a_bodiless_answer_never_reaches_the_next_client(
    start_gateway: StartGateway, framing_upstream: str, status: int
):
    gateway = start_gateway(routes_text([framing_upstream]))
    first = send(gateway.port, f"/api/v1/image/late/{status}")
    assert (first.status, first.body) == (status, b"")
    # Sent before the stray body arrives: the 204's connection is not the one it goes out on.
    second = send(gateway.port, "/api/v1/image/plain/next")
    assert (second.status, second.body) == (200, b"/plain/next")
    assert "set-cookie" not in second.headers


def test_a_body_sent_with_an_answer_to_head_never_reaches_the_client(
    start_gateway: StartGateway, framing_upstream: str
):
    gateway = start_gateway(routes_text([framing_upstream]))
    # HEAD, then a GET pipelined behind it on one client connection: the client reads exactly
    # one head for the HEAD, so body bytes after it would be taken as the GET's answer.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection:
        connection.sendall(
            b"HEAD /api/v1/image/head-with-body HTTP/1.1\r\nhost: edge\r\n\r\n"
            b"GET /api/v1/image/plain/next HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n"
        )
        answer = b""
        while data := connection.recv(65536):
            answer += data
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 65" in head.lower(), head
    assert rest.startswith(b"HTTP/1.1 200"), rest
    assert rest.endswith(b"\r\n\r\n/plain/next") and b"stray" not in rest, rest


@pytest.mark.parametrize(
    ("method", "replayed"), [("POST", False), ("PATCH", False), ("PUT", True), ("GET", True)]
)
def test_a_request_the_upstream_read_and_never_answered_is_sent_again_only_if_idempotent(
    start_gateway: StartGateway, framing_upstream: str, method: str, replayed: bool
):
    gateway = start_gateway(routes_text([framing_upstream]))
    SEEN.clear()
    # One pooled connection, then a request on it that the upstream reads and dies on: from
    # the gateway's side just like a connection that the upstream closed while it was idle.
    assert send(gateway.port, "/api/v1/image/drop-later/warm").status == 200
    reply = send(gateway.port, "/api/v1/image/drop-later/charge", method=method, body=b"amount=100")
    sent = [entry for entry in SEEN if entry[1] == "/drop-later/charge"]
    if replayed:
        # Sent again on a fresh connection, whose first request is answered.
        assert (reply.status, reply.body) == (200, b"served")
        assert len(sent) == 2
    else:
        assert reply.status == 502 and reply.json()["reason"] == "upstream_protocol_error"
        assert sent == [(method, "/drop-later/charge", b"amount=100")]


def _read_until_closed(port: int, path: str) -> bytes:
    request = f"GET {path} HTTP/1.1\r\nhost: edge\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        chunks = []
        while data := connection.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_upstream_that_fails_mid_answer_cuts_the_clients_answer_short_and_says_why(
    start_gateway: StartGateway, framing_upstream: str, framing: str
):
    gateway = start_gateway(routes_text([framing_upstream]))
    answer = _read_until_closed(gateway.port, f"/api/v1/image/cut/{framing}")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    # The connection closes without the answer's end: short of its Content-Length, or without
    # the last chunk, so no client can take the part for the whole.
    if framing == "length":
        assert b"content-length: 200000" in head.lower() and len(body) < 200_000
    else:
        assert not body.endswith(b"0\r\n\r\n") and 50_000 < len(body) < 200_000
    request_id = dict(
        line.split(": ", 1) for line in head.decode("latin-1").lower().split("\r\n")[1:]
    )["x-request-id"]
    # One warning that names the request and the upstream; no traceback from the server.
    deadline = time.monotonic() + 5
    while "upstream failed mid-response" not in gateway.process.stderr():
        assert time.monotonic() < deadline, gateway.process.stderr()[-2000:]
        time.sleep(0.05)
    warning = next(
        json.loads(line)
        for line in gateway.process.stderr().splitlines()
        if "upstream failed mid-response" in line
    )
    assert (warning["level"], warning["request_id"]) == ("warning", request_id)
    assert warning["upstream"] and warning["error"] == "RemoteProtocolError"
    assert "Exception in ASGI application" not in gateway.process.stderr()
    metrics = httpx.get(gateway.admin + "/metrics").text
    assert 'reason="upstream_failed_mid_response"' in metrics
    # The gateway keeps serving.
    reply = send(gateway.port, "/api/v1/image/plain/after")
    assert (reply.status, reply.body) == (200, b"/plain/after")
