"""An HTTP/1.1 transport over pooled asyncio connections, parsed by httptools.

The proxy calls :meth:`Http1Transport.exchange` with plain values (see
``gateway.upstream_exchange``); it is also an httpx transport, and raises httpx's exceptions like
the proxy's other transports. It only moves bytes. A proxy needs little of a general client: no
cookies, redirects, decompression or proxies, and the request target must go out exactly as
given. Doing just that on ``asyncio.Protocol`` with the same C parser uvicorn uses costs a
fraction of aiohttp's or httpcore's per-request work (see ``bench/gateway.py``).

Flow control both ways: request bodies wait for the socket to drain, and a response body that
outruns its reader pauses the socket, so a large body never piles up in memory.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence

import httptools
import httpx

from gateway.routes_model import IDEMPOTENT_METHODS

__all__ = ["Http1Response", "Http1Transport"]

_HIGH_WATER = 1024 * 1024
_TARGET_CACHE_SIZE = 4096
# Headers a caller may not choose: the transport frames the message itself.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# Answers that end with their head whatever their headers say (RFC 9110 15.3.5, 15.4.5).
_NO_BODY = frozenset({204, 304})


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        # Any byte came back for the current exchange: the upstream has seen the request.
        self.answered = False
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
        # A 1xx answer (100 Continue, 103 Early Hints) is being read: not the exchange's answer.
        self._interim = False

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.complete:
                self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))
            # A complete answer stays readable; the connection goes either way.
            self._reusable = False
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
    def on_message_begin(self) -> None:
        if self.complete:
            # Bytes after the exchange's final answer: no request of ours asked for them, and
            # the next exchange must not read them as its own. The connection is done.
            raise httptools.HttpParserError("data after the response")
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            if status == 101:
                raise httptools.HttpParserError("101 Switching Protocols to a plain request")
            # Informational (RFC 9110 15.2): skipped, the final answer follows on this connection.
            self._interim = True
            return
        names = {name.lower() for name, _ in self._headers}
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
        if self._interim:
            self._interim = False
            return
        # Read now: once the message is complete the parser resets for the next one. A 204 or
        # 304 ends with its head, but servers that write a body for it anyway are common, and
        # that body may come once the connection is back in the pool, where the next client's
        # exchange would read it as its answer: such a connection is not reused.
        parser = self._parser
        self._reusable = parser.should_keep_alive() and parser.get_status_code() not in _NO_BODY
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
        self._interim = False
        self._error = None
        self.answered = False
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

    def end_at_head(self) -> None:
        """The answer to HEAD ends with its head (RFC 9110 9.3.2). Body bytes that came in the
        same read are dropped, and as httptools cannot be told that a HEAD answer has no body,
        the connection is not reused either."""
        self.complete = True
        self._chunks.clear()
        self._buffered = 0
        self.close()

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


class Http1Response:
    """The answer of one exchange: status and raw headers, the body read from its connection."""

    __slots__ = ("_connection", "_release", "_released", "_timeout", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        connection: _Connection,
        timeout: float | None,
        release: Callable[[_Connection], None],
    ):
        self.status = status
        self.headers = headers
        self._connection = connection
        self._timeout = timeout
        self._release = release
        self._released = False

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._connection.body(self._timeout):
            yield chunk

    def buffered_body(self) -> bytes | None:
        """The whole body when it has already arrived (small answers usually do), else None."""
        return self._connection.take_complete_body()

    async def aclose(self) -> None:
        # Once only: a connection handed to the idle pool twice would carry two exchanges.
        if not self._released:
            self._released = True
            self._release(self._connection)


class _ResponseStream(httpx.AsyncByteStream):
    """An :class:`Http1Response`'s body as httpx wants it, for callers using httpx objects."""

    __slots__ = ("_response",)

    def __init__(self, response: Http1Response):
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.chunks():
            yield chunk

    def buffered_body(self) -> bytes | None:
        return self._response.buffered_body()

    async def aclose(self) -> None:
        await self._response.aclose()


class _Target:
    """What the transport needs of a URL: the pool key, the Host value, the request target."""

    __slots__ = ("key", "netloc", "path")

    def __init__(self, url: httpx.URL):
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme}://")
        self.key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        self.netloc = url.netloc
        # httpx's parse (percent-encoding, dot segments) decides the exact bytes the upstream
        # sees, on both paths alike.
        self.path = url.raw_path


class Http1Transport(httpx.AsyncBaseTransport):
    """Pooled HTTP/1.1 connections per upstream address.

    :meth:`exchange` takes and returns plain values (the proxy's path); the httpx interface,
    :meth:`handle_async_request`, wraps it.
    """

    def __init__(self, *, max_idle_per_host: int = 256, tls: ssl.SSLContext | None = None):
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._max_idle = max_idle_per_host
        self._closed = False
        # https:// endpoints: certificates verified against the system's trust store by default.
        self._tls = tls
        self._targets: dict[str, _Target] = {}

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _target(self, url: str) -> _Target:
        # Parsing a URL costs more than the rest of building a request; paths repeat.
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= _TARGET_CACHE_SIZE:
                self._targets.clear()
            target = self._targets[url] = _Target(httpx.URL(url))
        return target

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
        timeouts = request.extensions.get("timeout", {})
        stream = request.stream
        # As httpx's own async transport: a sync-only stream cannot come from AsyncClient.
        assert isinstance(stream, httpx.AsyncByteStream)
        # No deadline of its own: a caller through httpx bounds the whole exchange itself.
        answer = await self.exchange(
            request.method,
            str(request.url),
            request.headers.raw,
            request.content if isinstance(stream, httpx.ByteStream) else stream,
            connect=timeouts.get("connect"),
            read=timeouts.get("read"),
            deadline=None,
        )
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_ResponseStream(answer),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes],
        *,
        connect: float | None,
        read: float | None,
        deadline: float | None,
    ) -> Http1Response:
        """Send one request and wait for its head; ``deadline`` is event-loop time."""
        target = self._target(url)
        key = target.key
        head_timeout = read
        loop = asyncio.get_running_loop()
        if deadline is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise httpx.ReadTimeout("the upstream's total deadline passed")
            head_timeout = remaining if head_timeout is None else min(head_timeout, remaining)
        head = _head(method, target, headers, body)

        connection = self._checkout(key)
        while True:
            if connection is None:
                connect_seconds = connect
                if deadline is not None:
                    left = deadline - loop.time()
                    connect_seconds = left if connect is None else min(connect, left)
                connection = await self._connect(key[0], key[1], key[2], connect_seconds)
            connection.start()
            try:
                await _send(connection, head, body)
                status, response_headers = await connection.response_head(head_timeout)
            except httpx.RemoteProtocolError:
                connection.close()
                if _replayable(connection, method, body):
                    connection = None
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            break
        if method == "HEAD":
            connection.end_at_head()

        def release(done: _Connection) -> None:
            self._release(key, done)

        return Http1Response(status, response_headers, connection, read, release)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _head(
    method: str,
    target: _Target,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes | AsyncIterable[bytes],
) -> bytes:
    """The request line and headers; the transport chooses the framing itself."""
    lines = [method.encode(), b" ", target.path, b" HTTP/1.1\r\n", b""]
    has_host = False
    lengths: list[bytes] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in _FRAMING:
            if lowered == b"content-length":
                lengths.append(value)
            continue
        has_host = has_host or lowered == b"host"
        lines += [name, b": ", value, b"\r\n"]
    if not has_host:
        # Where httpx puts its own Host header: first.
        lines[4] = b"Host: " + target.netloc + b"\r\n"
    if isinstance(body, bytes):
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(b"content-length: %d\r\n" % len(body))
    elif lengths:
        # A streamed body of known length (the client's Content-Length) goes out unchunked.
        lines.append(b"content-length: " + b", ".join(lengths) + b"\r\n")
    else:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _replayable(connection: _Connection, method: str, body: bytes | AsyncIterable[bytes]) -> bool:
    """Whether a request that failed on ``connection`` may go again on a fresh one, unasked.

    A pooled connection the upstream closed while idle fails with no byte of an answer, and the
    request never reached a handler. But an upstream that read the request and then died looks
    the same, so only an idempotent method (RFC 9110 9.2.2) is sent again, as Go's and
    Envoy's clients do: a POST could otherwise charge a card twice. Anything else is the
    route's ``retries`` policy to judge.
    """
    return (
        connection.reused
        and not connection.answered
        and method in IDEMPOTENT_METHODS
        and isinstance(body, bytes)
    )


async def _send(connection: _Connection, head: bytes, body: bytes | AsyncIterable[bytes]) -> None:
    transport = connection.transport
    assert transport is not None
    if isinstance(body, bytes):
        transport.write(head + body if len(body) < 65_536 else head)
        if len(body) >= 65_536:
            transport.write(body)
        await connection.drain()
        return
    transport.write(head)
    chunked = head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    async for chunk in body:
        if not chunk:
            continue
        if connection.closed:
            raise httpx.WriteError("upstream closed the connection during the request body")
        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        await connection.drain()
    if chunked:
        transport.write(b"0\r\n\r\n")
