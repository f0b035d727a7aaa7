"""Request smuggling shapes over raw sockets: 400, and nothing reaches what is behind.

Sent to ``doma-gateway serve`` (the upstream must see no request at all) and to the HTTP check
listener of ``doma-gateway authz`` (no check may be decided). Extends
tests/gateway/test_headers.py (CL+TE) and tests/authz/test_http_check.py (in-process) with every
framing ambiguity of RFC 9112 against real processes; a smuggled second request must never get
an answer of its own.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import Record
from tests.gateway.conftest import StartGateway, routes_text
from tests.support import processes
from tests.support.http import send
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks
from tests.support.upstreams import ScriptedUpstream

pytestmark = pytest.mark.faults

SMUGGLED = b"GET /api/v2/scan/smuggled HTTP/1.1\r\nHost: e\r\n\r\n"


def _post(framing: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    return (
        b"POST /api/v2/scan/upload HTTP/" + version + b"\r\nHost: e\r\n" + framing + b"\r\n" + body
    )


SHAPES: dict[str, bytes] = {
    "cl-and-te": _post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    "te-and-cl": _post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n"),
    "duplicate-cl": _post(b"Content-Length: 4\r\nContent-Length: 40\r\n", b"abcd"),
    "duplicate-cl-equal": _post(b"Content-Length: 4\r\nContent-Length: 4\r\n", b"abcd"),
    "cl-list": _post(b"Content-Length: 4, 4\r\n", b"abcd"),
    "cl-signed": _post(b"Content-Length: +4\r\n", b"abcd"),
    "obs-fold": b"GET /api/v2/scan/echo HTTP/1.1\r\nHost: e\r\nX-A: one\r\n two\r\n\r\n",
    "obs-fold-te": _post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    "bare-lf": b"GET /api/v2/scan/echo HTTP/1.1\nHost: e\n\n",
    "bare-lf-in-headers": b"GET /api/v2/scan/echo HTTP/1.1\r\nHost: e\nX-A: b\r\n\r\n",
    "chunk-size-not-hex": _post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"),
    "chunk-size-negative": _post(b"Transfer-Encoding: chunked\r\n", b"-1\r\nabc\r\n0\r\n\r\n"),
    "chunk-size-overflow": _post(
        b"Transfer-Encoding: chunked\r\n", b"FFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk-size-space": _post(b"Transfer-Encoding: chunked\r\n", b"3 \r\nabc\r\n0\r\n\r\n"),
    "chunk-bare-lf": _post(b"Transfer-Encoding: chunked\r\n", b"3\nabc\n0\n\n"),
    "te-unknown": _post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    "te-chunked-not-last": _post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
    "te-space-before-colon": _post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
    "te-in-http-1.0": _post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"1.0"),
    "nul-in-header": b"GET /api/v2/scan/echo HTTP/1.1\r\nHost: e\r\nX-A: a\x00b\r\n\r\n",
}


def raw_exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send ``data`` and read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not piece:
                break
            answer += piece
        return answer


@pytest.fixture(scope="module")
def smuggling_upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream("behind") as server:
        yield server


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory, smuggling_upstream: ScriptedUpstream
) -> Iterator[processes.ServerProcess]:
    routes = tmp_path_factory.mktemp("smuggling") / "routes.yaml"
    routes.write_text(routes_text([smuggling_upstream.url]))
    process = processes.start(
        ["serve", "--routes", str(routes), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    )
    yield process
    process.stop()
    assert "Traceback" not in process.stderr()
    assert "never retrieved" not in process.stderr()


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_the_gateway_refuses_ambiguous_framing_and_forwards_nothing(
    edge: processes.ServerProcess, smuggling_upstream: ScriptedUpstream, shape: str
):
    before = sum(smuggling_upstream.hits.values())
    answer = raw_exchange(edge.port("http"), SHAPES[shape] + SMUGGLED)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", answer)) == 1, answer
    assert sum(smuggling_upstream.hits.values()) == before, dict(smuggling_upstream.hits)
    assert send(edge.port("http"), "/api/v2/scan/echo").status == 200


def test_a_client_gone_mid_body_leaves_no_error_behind(
    start_gateway: StartGateway, upstream: ScriptedUpstream, record: Record
):
    """A streamed upload cut off by the client: the upstream exchange is abandoned quietly."""
    gateway = start_gateway(routes_text([upstream.url]))
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=3) as sock:
            sock.sendall(
                b"POST /api/v2/scan/upload HTTP/1.1\r\nHost: e\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n"
            )
            time.sleep(0.05)
    time.sleep(0.5)
    assert send(gateway.port, "/api/v2/scan/echo").status == 200
    # asyncio reports a never-retrieved error when the future is collected: at the latest on exit.
    assert gateway.process.stop() == 0
    stderr = gateway.process.stderr()
    record(abandoned_uploads=20, upstream_saw=upstream.hits["/upload"])
    assert "never retrieved" not in stderr, stderr[-2000:]
    assert "Traceback" not in stderr


# The HTTP check listener of doma-gateway authz: its shapes use the check path.
def _check_shapes() -> dict[str, bytes]:
    return {
        name: data.replace(b"/api/v2/scan/upload", b"/api/v1/scan/results").replace(
            b"/api/v2/scan/echo", b"/api/v1/scan/results"
        )
        for name, data in SHAPES.items()
    }


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[processes.ServerProcess]:
    directory: Path = tmp_path_factory.mktemp("smuggling-authz")
    (directory / "jwks.json").write_bytes(jwks(SigningKey()))
    (directory / "routes.yaml").write_text(
        f"auth:\n  issuers:\n    - issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n"
        "      jwks_file: jwks.json\n  bypass: [/api/v1/*/health]\n"
    )
    process = processes.start(
        [
            "authz",
            "--routes",
            str(directory / "routes.yaml"),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ]
    )
    yield process
    process.stop()
    assert "Traceback" not in process.stderr()


def _decided(authz: processes.ServerProcess) -> float:
    text = send(authz.port("metrics"), "/metrics").body.decode()
    return sum(
        float(value)
        for value in re.findall(
            r'^doma_authz_checks_total\{[^}]*transport="http"[^}]*\} (\S+)$', text, re.MULTILINE
        )
    )


@pytest.mark.parametrize("shape", _check_shapes(), ids=list(SHAPES))
def test_the_http_check_listener_refuses_ambiguous_framing(
    authz: processes.ServerProcess, shape: str
):
    data = _check_shapes()[shape]
    before = _decided(authz)
    answer = raw_exchange(
        authz.port("http"), data + SMUGGLED.replace(b"/api/v2/scan", b"/api/v1/scan")
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", answer)) == 1, answer
    assert _decided(authz) == before
    assert send(authz.port("http"), "/api/v1/scan/health").status == 200
