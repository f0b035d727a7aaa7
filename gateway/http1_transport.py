"""An httpx transport speaking HTTP/1.1 over pooled asyncio connections, parsed by httptools.

httpx stays the client API (requests, responses, exceptions; respx and ``httpx.MockTransport``
work in tests); this transport only moves bytes. A proxy needs little of a general client:
no cookies, redirects, decompression or proxies, and the request target must go out exactly as
given. Doing just that on ``asyncio.Protocol`` with the same C parser uvicorn uses costs a
fraction of aiohttp's or httpcore's per-request work (see ``bench/gateway.py``).

Flow control both ways: request bodies wait for the socket to drain, and a response body that
outruns its reader pauses the socket, so a large body never piles up in memory.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator

import httptools
import httpx

__all__ = ["DEADLINE", "Http1Transport"]

# Request extension: the event-loop time by which the response head must have arrived (the
# upstream's total deadline, retries included); cheaper than an ``asyncio.timeout`` per attempt.
DEADLINE = "doma.deadline"

_HIGH_WATER = 1024 * 1024
# Headers a caller may not choose: the transport frames the message itself.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._error: Exception | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._body_waiter: asyncio.Future[None] | None = None
        self.complete = False
        self._reusable = False
        self._delimited_by_close = False
        self._reading_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self._delimited_by_close and exc is None:
            # No Content-Length and not chunked: the body is whatever came before the close
            # (RFC 9112 6.3); the parser cannot know that, the transport can.
            self.complete = True
            self._wake_body()
        if not self.complete:
            self._fail(httpx.RemoteProtocolError("upstream closed the connection"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(httpx.WriteError("upstream closed the connection"))
            self._drain_waiter.exception()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        names = {name.lower() for name, _ in self._headers}
        status = self._parser.get_status_code()
        self._delimited_by_close = (
            b"content-length" not in names
            and b"transfer-encoding" not in names
            and status >= 200
            and status not in (204, 304)
        )
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_body()

    def on_message_complete(self) -> None:
        # Read now: once the message is complete the parser resets for the next one.
        self._reusable = self._parser.should_keep_alive()
        self.complete = True
        self._wake_body()

    # -- used by the transport ---------------------------------------------------------
    def _fail(self, error: Exception) -> None:
        self._error = error
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_exception(error)
            # The exchange may have been abandoned before its head was awaited (the client left
            # mid-body): mark the error as seen so asyncio does not log it as never retrieved.
            self._headers_done.exception()
        self._wake_body()

    def _wake_body(self) -> None:
        if self._body_waiter is not None and not self._body_waiter.done():
            self._body_waiter.set_result(None)

    def start(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._headers = []
        self._chunks.clear()
        self._buffered = 0
        self.complete = False
        self._reusable = False
        self._delimited_by_close = False
        self._error = None
        self._headers_done = self._loop.create_future()

    async def drain(self) -> None:
        if self._writing_paused and not self.closed:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    async def response_head(
        self, read_seconds: float | None
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self._headers_done is not None
        if not self._headers_done.done():
            await _within(self._headers_done, read_seconds, self._loop)
        self._headers_done.result()
        return self._parser.get_status_code(), self._headers

    async def body(self, read_seconds: float | None) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reading_paused and self._buffered < _HIGH_WATER // 2 and self.transport:
                    self._reading_paused = False
                    self.transport.resume_reading()
                yield chunk
                continue
            if self.complete:
                return
            if self._error is not None:
                raise self._error
            self._body_waiter = self._loop.create_future()
            await _within(self._body_waiter, read_seconds, self._loop)

    def take_complete_body(self) -> bytes | None:
        if not self.complete or self._error is not None:
            return None
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    @property
    def keep_alive(self) -> bool:
        return self.complete and self._reusable and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def _within(
    future: asyncio.Future[None], seconds: float | None, loop: asyncio.AbstractEventLoop
) -> None:
    """Await ``future`` for at most ``seconds``; a timer handle is cheaper than wait_for."""
    if seconds is None:
        await future
        return
    handle = loop.call_later(seconds, _expire, future)
    try:
        await future
    finally:
        handle.cancel()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(httpx.ReadTimeout("no data from the upstream within read_seconds"))


class _ResponseStream(httpx.AsyncByteStream):
    __slots__ = ("_connection", "_release", "_timeout")

    def __init__(self, connection: _Connection, timeout: float | None, release: object):
        self._connection = connection
        self._timeout = timeout
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._connection.body(self._timeout):
            yield chunk

    def buffered_body(self) -> bytes | None:
        """The whole body when it has already arrived (small answers usually do), else None."""
        return self._connection.take_complete_body()

    async def aclose(self) -> None:
        self._release(self._connection)  # type: ignore[operator]


class Http1Transport(httpx.AsyncBaseTransport):
    """Pooled HTTP/1.1 connections per upstream address."""

    honours_deadline = True

    def __init__(self, *, max_idle_per_host: int = 256, tls: ssl.SSLContext | None = None):
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._max_idle = max_idle_per_host
        self._closed = False
        # https:// endpoints: certificates verified against the system's trust store by default.
        self._tls = tls

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def _connect(
        self, scheme: str, host: str, port: int, connect_seconds: float | None
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(connect_seconds):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out") from exc
        except ssl.SSLError as exc:
            raise httpx.ConnectError(f"TLS with {host}:{port} failed: {exc.reason}") from exc
        except OSError as exc:
            raise httpx.ConnectError(
                f"connect to {host}:{port} failed: {exc.strerror or exc}"
            ) from exc
        return connection

    def _checkout(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.reused = True
                return connection
        return None

    def _release(self, key: tuple[str, str, int], connection: _Connection) -> None:
        if connection.keep_alive and not self._closed:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme}://")
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        head_timeout = read_timeout
        deadline = request.extensions.get(DEADLINE)
        loop = asyncio.get_running_loop()
        if deadline is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise httpx.ReadTimeout("the upstream's total deadline passed")
            head_timeout = remaining if head_timeout is None else min(head_timeout, remaining)
        stream = request.stream
        body = request.content if isinstance(stream, httpx.ByteStream) else None
        head = self._head(request, body)

        connection = self._checkout(key)
        while True:
            if connection is None:
                connect = timeouts.get("connect")
                if deadline is not None:
                    left = deadline - loop.time()
                    connect = left if connect is None else min(connect, left)
                connection = await self._connect(key[0], key[1], key[2], connect)
            connection.start()
            try:
                await self._send(connection, head, body, stream)
                status, headers = await connection.response_head(head_timeout)
            except httpx.RemoteProtocolError:
                connection.close()
                # A pooled connection the upstream closed while idle fails before any byte of
                # the answer: the request never reached it, so one fresh connection is safe.
                if connection.reused and body is not None:
                    connection = None
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            break
        if request.method == "HEAD":
            # httptools cannot be told a HEAD answer has no body: never reuse this connection.
            connection.complete = True
            connection.close()
        done = connection

        def release(_: object) -> None:
            self._release(key, done)

        return httpx.Response(
            status_code=status,
            headers=headers,
            stream=_ResponseStream(connection, read_timeout, release),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    @staticmethod
    def _head(request: httpx.Request, body: bytes | None) -> bytes:
        url = request.url
        target = url.raw_path
        lines = [request.method.encode(), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            if name.lower() in _FRAMING:
                continue
            lines += [name, b": ", value, b"\r\n"]
        if body is not None:
            if body or request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
                lines.append(b"content-length: %d\r\n" % len(body))
        elif (length := request.headers.get("content-length")) is not None:
            lines.append(b"content-length: " + length.encode("ascii") + b"\r\n")
        else:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    @staticmethod
    async def _send(
        connection: _Connection,
        head: bytes,
        body: bytes | None,
        stream: httpx.SyncByteStream | httpx.AsyncByteStream,
    ) -> None:
        transport = connection.transport
        assert transport is not None
        if body is not None:
            transport.write(head + body if len(body) < 65_536 else head)
            if len(body) >= 65_536:
                transport.write(body)
            await connection.drain()
            return
        transport.write(head)
        chunked = b"transfer-encoding: chunked\r\n" in head
        async for chunk in stream:  # type: ignore[union-attr]
            if not chunk:
                continue
            if connection.closed:
                raise httpx.WriteError("upstream closed the connection during the request body")
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await connection.drain()
        if chunked:
            transport.write(b"0\r\n\r\n")

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
