"""The plain-value path to the upstream sends what the httpx path sends, byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from gateway.http1_transport import Http1Transport
from gateway.upstream_exchange import Exchange, HttpxExchange, exchange_for

Body = Callable[[], bytes | AsyncIterator[bytes]]


async def _streamed() -> AsyncIterator[bytes]:
    yield b"hello"
    yield b"world"


def _no_body() -> bytes:
    return b""


def _small_body() -> bytes:
    return b"hello"


SHAPES: dict[str, tuple[str, list[tuple[bytes, bytes]], Body]] = {
    "get": ("GET", [(b"accept", b"*/*"), (b"x-request-id", b"r1")], _no_body),
    "empty post": ("POST", [(b"x-forwarded-for", b"10.0.0.1")], _no_body),
    "small post": ("POST", [(b"content-type", b"text/plain")], _small_body),
    "streamed, known length": ("PUT", [(b"content-length", b"10")], _streamed),
    "streamed, chunked": ("POST", [(b"accept", b"*/*")], _streamed),
    "preserved host": ("GET", [(b"accept", b"*/*"), (b"host", b"client.example")], _no_body),
    "delete": ("DELETE", [], _no_body),
}


async def _received(exchange: Exchange, port: int, shape: str) -> bytes:
    """Everything the upstream read for one request sent through ``exchange``."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        # Whatever body follows arrives at once (it is small): read until the line goes quiet.
        with contextlib.suppress(TimeoutError):
            while True:
                async with asyncio.timeout(0.1):
                    chunk = await reader.read(65_536)
                if not chunk:
                    break
                seen.append(chunk)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    method, headers, body = SHAPES[shape]
    async with server:
        response = await exchange(
            method,
            f"http://127.0.0.1:{port}/a%3Ab/./c?q=%2F",
            headers,
            body(),
            connect=1.0,
            read=1.0,
            deadline=asyncio.get_running_loop().time() + 5,
        )
        assert response.status == 200
        await response.aclose()
    return b"".join(seen)


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_direct_exchange_sends_the_same_bytes_as_the_httpx_path(shape: str):
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    direct_transport, httpx_transport = Http1Transport(), Http1Transport()
    try:
        direct = await _received(direct_transport.exchange, port, shape)
        through_httpx = await _received(HttpxExchange(httpx_transport), port, shape)
    finally:
        await direct_transport.aclose()
        await httpx_transport.aclose()
    assert direct == through_httpx
    assert direct.startswith(b"%s /a%%3Ab/c?q=%%2F HTTP/1.1\r\n" % SHAPES[shape][0].encode())


def test_the_default_transport_is_reached_without_httpx_objects():
    transport = Http1Transport()
    assert exchange_for(transport) == transport.exchange


async def test_other_transports_are_reached_through_httpx_objects():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, headers={"x-seen": request.headers["x-a"]}, content=b"done")

    exchange = exchange_for(httpx.MockTransport(handler))
    assert isinstance(exchange, HttpxExchange)
    response = await exchange(
        "GET",
        "http://upstream.invalid/x",
        [(b"x-a", b"1")],
        b"",
        connect=1.0,
        read=1.0,
        deadline=asyncio.get_running_loop().time() + 5,
    )
    assert response.status == 201
    assert (b"x-seen", b"1") in response.headers
    assert response.buffered_body() == b"done"
    await response.aclose()
