"""The edge's response head, written in one pass, against uvicorn's own ``send``.

Every head is sent through both cycles: the bytes written, the framing state and any error
must be the same, for well-formed heads and for every way a head can be wrong. Then through a
real gateway, on one connection: pipelined answers whole and in order, each framed right.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.http_cycle import ResponseCycle
from tests.gateway.conftest import Gateway


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Flow:
    write_paused = False


def _cycle(
    cls: type[RequestResponseCycle],
    *,
    method: str = "GET",
    keep_alive: bool = True,
    default_headers: list[tuple[bytes, bytes]] | None = None,
) -> RequestResponseCycle:
    return cls(
        scope={"method": method},  # type: ignore[arg-type]
        transport=_Transport(),  # type: ignore[arg-type]
        flow=_Flow(),  # type: ignore[arg-type]
        logger=None,  # type: ignore[arg-type]
        access_logger=None,  # type: ignore[arg-type]
        access_log=False,
        default_headers=default_headers or [],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )


def _outcome(cycle: RequestResponseCycle, message: dict[str, Any]) -> tuple[object, ...]:
    async def send() -> None:
        await cycle.send(message)  # type: ignore[arg-type]

    try:
        asyncio.run(send())
    except Exception as exc:  # the error itself is what is compared
        return ("error", type(exc), str(exc), cycle.response_started)
    transport: _Transport = cycle.transport  # type: ignore[assignment]
    return (
        b"".join(transport.written),
        cycle.response_started,
        cycle.chunked_encoding,
        cycle.expected_content_length,
        cycle.keep_alive,
    )


def _same(headers: Any, *, status: int = 200, **options: Any) -> tuple[object, ...]:
    message = {"type": "http.response.start", "status": status, "headers": headers}
    ours = _outcome(_cycle(ResponseCycle, **options), dict(message))
    uvicorn = _outcome(_cycle(RequestResponseCycle, **options), dict(message))
    assert ours == uvicorn
    return ours


UPSTREAM = [
    (b"server", b"nginx/1.22.1"),
    (b"date", b"Sat, 28 Nov 2026 12:00:00 GMT"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"2"),
    (b"access-control-allow-origin", b"https://app.example"),
    (b"vary", b"Origin"),
    (b"ratelimit", b'"default";r=99;t=1'),
]


def test_a_proxied_head_is_written_once_as_uvicorn_writes_it() -> None:
    written, started, chunked, length, keep_alive = _same(UPSTREAM)
    assert written == (
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"%s: %s\r\n" % header for header in UPSTREAM) + b"\r\n"
    )
    assert (started, chunked, length, keep_alive) == (True, False, 2, True)


@pytest.mark.parametrize(
    ("headers", "options"),
    [
        ([], {}),
        ([(b"Content-Type", b"text/plain"), (b"X-Trace", b"A")], {}),
        ([(b"transfer-encoding", b"chunked")], {}),
        ([(b"transfer-encoding", b"Chunked"), (b"content-length", b"5")], {}),
        ([(b"content-length", b"5"), (b"transfer-encoding", b"chunked")], {}),
        ([(b"content-length", b"5"), (b"content-length", b"7")], {}),
        ([(b"transfer-encoding", b"gzip, chunked")], {}),
        ([(b"connection", b"keep-alive, Close"), (b"content-length", b"0")], {}),
        ([(b"connection", b"upgrade")], {}),
        ([(b"content-length", b"0")], {"keep_alive": False}),
        ([(b"content-type", b"text/plain")], {"method": "HEAD"}),
        ([(b"x-tab", b"a\tb"), (b"x-high", b"caf\xc3\xa9\x80\xff")], {}),
        ([[b"x-list", b"pair"]], {}),
        (((b"x-tuple", b"of-headers"),), {}),
        ([(b"content-length", b"2")], {"default_headers": [(b"server", b"uvicorn")]}),
    ],
)
def test_framing_and_names_follow_uvicorn(headers: Any, options: dict[str, Any]) -> None:
    _same(headers, **options)


@pytest.mark.parametrize("status", [204, 304, 101, 599])
def test_statuses_without_a_body_get_no_chunked_framing(status: int) -> None:
    _same([(b"x-a", b"b")], status=status)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-ok", b"1"), (b"x-split", b"a\r\nset-cookie: stolen=1")],
        [(b"x-lf", b"a\nb")],
        [(b"x-nul", b"a\x00b")],
        [(b"x-del", b"a\x7fb")],
        [(b"x-esc", b"\x1b[31m")],
        [(b"set-cookie: stolen=1; x", b"y")],
        [(b"x name", b"y")],
        [(b"x:name", b"y")],
        [(b"x\r\nname", b"y")],
        [(b"(x)", b"y")],
        [(b"x-triple", b"a", b"\r\nset-cookie: stolen=1")],
        [(b"x-single",)],
        [(b"x-ok", b"1"), (b"x-single",)],
        [(b"x-str", "text")],
        [("x-str", b"text")],
        [(b"x-int", 1)],
        None,
        42,
    ],
)
def test_a_header_uvicorn_refuses_is_refused_and_nothing_is_written(headers: Any) -> None:
    outcome = _same(headers)
    assert outcome[0] == "error"


_NAME = st.binary(min_size=0, max_size=12) | st.sampled_from(
    [b"content-length", b"transfer-encoding", b"connection", b"X-Upper", b"vary"]
)
_VALUE = st.binary(min_size=0, max_size=24) | st.sampled_from(
    [b"0", b"12", b"chunked", b"close", b"keep-alive, close", b"x\r\ny"]
)


@settings(max_examples=400, deadline=None)
@given(
    headers=st.lists(st.tuples(_NAME, _VALUE), max_size=6),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    status=st.sampled_from([200, 204, 304, 404]),
    keep_alive=st.booleans(),
)
def test_any_head_is_written_or_refused_as_uvicorn_does(
    headers: list[tuple[bytes, bytes]], method: str, status: int, keep_alive: bool
) -> None:
    _same(headers, status=status, method=method, keep_alive=keep_alive)


def test_body_messages_are_uvicorns() -> None:
    cycle = _cycle(ResponseCycle)
    transport: _Transport = cycle.transport  # type: ignore[assignment]

    async def exchange() -> None:
        await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
        await cycle.send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await cycle.send({"type": "http.response.body", "body": b""})

    asyncio.run(exchange())
    assert b"".join(transport.written) == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert cycle.response_complete


def test_a_second_start_is_refused_like_uvicorn() -> None:
    for cls in (ResponseCycle, RequestResponseCycle):
        cycle = _cycle(cls)
        start = {"type": "http.response.start", "status": 200, "headers": []}

        async def twice(cycle: RequestResponseCycle = cycle, start: Any = start) -> None:
            await cycle.send(start)
            await cycle.send(start)

        with pytest.raises(RuntimeError, match=r"Expected ASGI message 'http\.response\.body'"):
            asyncio.run(twice())


def _answer(reader: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer off a connection: status, headers (names as sent), body unframed."""
    status = int(reader.readline().split(b" ")[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) != b"\r\n":
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(": ")
        assert name not in headers, f"{name} twice"
        headers[name] = value
    if status in (204, 304):
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, reader.read(int(headers["content-length"]))
    assert headers["transfer-encoding"] == "chunked"
    body = b""
    while size := int(reader.readline(), 16):
        body += reader.read(size)
        assert reader.readline() == b"\r\n"
    assert reader.readline() == b"\r\n"
    return status, headers, body


def test_a_real_gateway_answers_pipelined_requests_whole_and_in_order(gateway: Gateway) -> None:
    # The download is larger than what the transport reads ahead (1 MiB): it is streamed,
    # chunked, however fast the upstream sends it.
    paths = ["/api/v1/image/echo", "/api/v1/image/status/204", "/api/v1/image/download/2000000"]
    requests = b"".join(f"GET {path} HTTP/1.1\r\nhost: edge\r\n\r\n".encode() for path in paths)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection:
        connection.sendall(requests)
        reader = connection.makefile("rb")
        echo, empty, download = (_answer(reader) for _ in paths)
    assert echo[0] == 200
    assert json.loads(echo[2])["path"] == "/echo"
    # The upstream's own spelling ("Content-Type", "Server") arrives lower-cased.
    assert {"content-type", "server", "x-request-id", "x-upstream"} <= set(echo[1])
    assert empty[0] == 204
    assert "transfer-encoding" not in empty[1]
    assert download[0] == 200
    assert download[1]["transfer-encoding"] == "chunked"
    assert len(download[2]) == 2_000_000
