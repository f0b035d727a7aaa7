"""A small HTTP/1.1 server for the HTTP ext_authz protocol, on asyncio and httptools (llhttp).

No web framework: Envoy is the only client, each check is a bodiless request, and the answer is
built from a cached byte string per decision. A check that needs no I/O (a cached token, a
denial before the token) is answered inside the parser callback; one that must wait (a key fetch,
a store lookup) goes to a task, and later requests on that connection queue behind it, so answers
keep their order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import cast

import httptools

from authz.check import CheckInput, Decider, Decision, deny
from authz.http_check import check_input, http_reply
from authz.metrics import AuthzMetrics

__all__ = ["HttpCheckServer"]

log = logging.getLogger("doma.authz.http")
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_MAX_HEADER_BYTES = 64 * 1024


class HttpCheckServer:
    def __init__(
        self,
        authorizer: Decider,
        metrics: AuthzMetrics | None = None,
        *,
        path_prefix: str = "",
    ):
        self.authorizer = authorizer
        self.metrics = metrics
        self.path_prefix = path_prefix
        self._internal_error = deny(503, "internal_error")
        self._server: asyncio.Server | None = None
        self._connections: set[_CheckProtocol] = set()
        self.port: int | None = None

    def reply(self, decision: Decision, keep_alive: bool) -> bytes:
        key = ("http", keep_alive)
        data: bytes | None = decision.wire.get(key)
        if data is None:
            try:
                data = http_reply(decision, keep_alive=keep_alive)
            except Exception:
                # Fail closed with the documented answer, never a dropped or half-written one.
                log.exception("answer failed")
                return self.reply(self._internal_error, keep_alive)
            decision.wire[key] = data
        return data

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _CheckProtocol(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let in-flight checks finish within ``grace``, then close."""
        if self._server is None:
            return
        self._server.close()
        deadline = time.monotonic() + grace
        # Polling is fine here: it runs once, at shutdown, for at most `grace` seconds.
        while any(c.busy for c in self._connections) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        for connection in list(self._connections):
            connection.close()
        await self._server.wait_closed()


class _CheckProtocol(asyncio.Protocol):
    def __init__(self, server: HttpCheckServer):
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._queue: deque[tuple[CheckInput, bool]] = deque()
        self._waiting = False

    @property
    def busy(self) -> bool:
        return self._waiting or bool(self._queue)

    # -- connection ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def _fail(self) -> None:
        if self._transport is not None:
            self._transport.write(_BAD_REQUEST)
            self._transport.close()

    # -- httptools callbacks ------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise httptools.HttpParserError("headers too large")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; refused, never guessed.
        if self._parser.get_http_version() == "1.0" and any(
            name.lower() == "transfer-encoding" for name, _ in self._headers
        ):
            raise httptools.HttpParserError("transfer-encoding in HTTP/1.0")

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("ascii")
        target = self._url.decode("latin-1")
        keep_alive = self._parser.should_keep_alive()
        check = check_input(method, target, self._headers, self._server.path_prefix)
        if not self._waiting:
            # Most checks need no I/O: answer them here, without scheduling a task.
            started = time.perf_counter()
            try:
                decision = self._server.authorizer.decide_now(check)
            except Exception:
                log.exception("check failed")
                decision = self._server._internal_error
            if decision is not None:
                self._answer(decision, keep_alive, started)
                return
        self._queue.append((check, keep_alive))
        if not self._waiting:
            self._start_worker()

    # -- answering ----------------------------------------------------------------
    def _start_worker(self) -> None:
        self._waiting = True
        asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        """Answer queued checks in order; one task per burst of requests on this connection."""
        server = self._server
        try:
            while self._queue:
                check, keep_alive = self._queue.popleft()
                started = time.perf_counter()
                try:
                    decision = await server.authorizer.decide(check)
                except Exception:
                    log.exception("check failed")
                    decision = server._internal_error
                self._answer(decision, keep_alive, started)
        finally:
            self._waiting = False

    def _answer(self, decision: Decision, keep_alive: bool, started: float) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(self._server.reply(decision, keep_alive))
        if not keep_alive:
            transport.close()
        if self._server.metrics is not None:
            self._server.metrics.observe("http", decision, time.perf_counter() - started)
