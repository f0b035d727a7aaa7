"""A small HTTP/1.1 server for the HTTP ext_authz protocol, on asyncio and httptools (llhttp).

No web framework: Envoy is the only client, each check is a bodiless request, and the answer is
built from a cached byte string per decision. A check that needs no I/O (a cached token, a
denial before the token) is answered inside the parser callback; one that must wait (a key fetch,
a store lookup) goes to a task, and later requests on that connection queue behind it, so answers
keep their order.

Whoever can reach the port is held to limits, since a check request is small and Envoy sends it
whole at once: a request head over 64 KiB (the URL included; each field counted with its ``: ``
and line end, so many empty fields cost like one long one) is refused 431, and so are trailer
fields past the same cap (trailer fields are never check headers); a request must arrive whole
within ``request_seconds`` (10) of its first byte or get 408, and a connection with no request
under way is closed after ``idle_seconds`` (300; the shipped Envoy bootstrap lets its pooled
connections idle 60 s, so Envoy closes them first). An upgrade or CONNECT request is refused
400 before it is decided. Each refusal closes the connection. A HEAD request gets its answer's
head only; ``Expect: 100-continue`` gets its ``100 Continue`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TypeVar, cast

import httptools

from authz.backpressure import BackPressured
from authz.check import CheckInput, Decider, Decision, deny
from authz.http2_check import PREFACE, Http2CheckProtocol, answer_blocks
from authz.http_check import check_input, http_reply
from authz.metrics import AuthzMetrics
from authz.tokens import CredentialMemo

__all__ = ["HttpCheckServer"]

log = logging.getLogger("doma.authz.http")
_MAX_HEAD_BYTES = 64 * 1024
# The preface's first line: no HTTP/1.1 request starts like this.
_HTTP2_REQUEST_LINE = PREFACE[:16]
_LINGER_SECONDS = 1.0
_T = TypeVar("_T")


# Refusals are JSON denials like any other, and close the connection.
_BAD_REQUEST = http_reply(deny(400, "invalid_http_request"), keep_alive=False)
_HEAD_TOO_LARGE = http_reply(deny(431, "headers_too_large"), keep_alive=False)
_TOO_SLOW = http_reply(deny(408, "request_timeout"), keep_alive=False)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HttpCheckServer:
    def __init__(
        self,
        authorizer: Decider,
        metrics: AuthzMetrics | None = None,
        *,
        path_prefix: str = "",
        request_seconds: float = 10.0,
        idle_seconds: float = 300.0,
    ):
        self.authorizer = authorizer
        self.metrics = metrics
        self.path_prefix = path_prefix
        self.request_seconds = request_seconds
        self.idle_seconds = idle_seconds
        self._internal_error = deny(503, "internal_error")
        self._server: asyncio.Server | None = None
        self._connections: set[_CheckProtocol | Http2CheckProtocol] = set()
        self.port: int | None = None

    def decide_now(self, check: CheckInput) -> Decision | None:
        """The decision when it needs no I/O, else None; a failure is the documented 503."""
        try:
            return self.authorizer.decide_now(check)
        except Exception:
            log.exception("check failed")
            return self._internal_error

    async def decide(self, check: CheckInput) -> Decision:
        """The decision of a check that waits on I/O; a failure is the documented 503."""
        try:
            return await self.authorizer.decide(check)
        except Exception:
            log.exception("check failed")
            return self._internal_error

    def reply(self, decision: Decision, keep_alive: bool, head: bool = False) -> bytes:
        """The HTTP/1.1 response answering ``decision``, encoded once per decision."""
        key = ("http", keep_alive, head)
        data: bytes | None = decision.wire.get(key)
        if data is None:
            data = self._encode(
                decision, key, partial(http_reply, keep_alive=keep_alive, head=head)
            )
        return data

    def reply_h2(self, decision: Decision, head: bool) -> tuple[bytes, bytes]:
        """The HPACK block and body answering ``decision`` over HTTP/2, encoded once."""
        key = ("h2", head)
        blocks: tuple[bytes, bytes] | None = decision.wire.get(key)
        if blocks is None:
            blocks = self._encode(decision, key, partial(answer_blocks, head=head))
        return blocks

    def _encode(self, decision: Decision, key: object, encode: Callable[[Decision], _T]) -> _T:
        """``encode(decision)``, kept on the decision under ``key``. Should it fail, the
        documented 503 instead: fail closed, never a dropped or half-written answer."""
        try:
            data = encode(decision)
        except Exception:
            log.exception("answer failed")
            fallback: _T | None = self._internal_error.wire.get(key)
            if fallback is None:
                fallback = self._encode(self._internal_error, key, encode)
            return fallback
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


class _CheckProtocol(BackPressured):
    def __init__(self, server: HttpCheckServer):
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        # Checks waiting on I/O, in order, with how to answer each: keep-alive, and HEAD.
        self._queue: deque[tuple[CheckInput, bool, bool]] = deque()
        self._waiting = False
        self._worker: asyncio.Task[None] | None = None
        # Envoy's pooled connection carries one client's checks after another: a run of checks
        # with one credential skips parsing and hashing it again.
        self._memo = CredentialMemo()
        # Whether a request is under way (it has until _deadline to be whole), and the bytes of
        # its head so far (None once the head is complete, or between requests).
        self._in_request = False
        self._head: int | None = None
        self._head_parts = 0
        # Requests begun on this connection (a read that began one does not charge the whole
        # read to its head), and whether the current one's head is done (later fields are
        # trailer fields: counted, never headers).
        self._begun = 0
        self._in_body = False
        # Whether the current request asked for "Expect: 100-continue".
        self._continue = False
        # The answer to a request the parser was stopped for, when it is not a plain 400; and
        # whether a refusal was sent (the connection only lingers until it closes).
        self._refusal: bytes | None = None
        self._refused = False
        self._deadline = 0.0
        # One timer per connection, firing every half request deadline to compare the clock with
        # _deadline: a request only moves _deadline, it never schedules or cancels a timer, and
        # a deadline is kept to within half a request deadline.
        self._timer: asyncio.TimerHandle | None = None
        self._tick = min(server.request_seconds, server.idle_seconds) / 2
        self._loop = asyncio.get_running_loop()
        # Bytes of a first read that could still be the start of the HTTP/2 preface.
        self._first: bytes | None = b""

    @property
    def busy(self) -> bool:
        return self._waiting or bool(self._queue)

    # -- connection ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._server._connections.add(self)
        self._deadline = self._loop.time() + self._server.idle_seconds
        self._arm(self._loop.time() + self._tick)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        now = self._loop.time()
        if self.busy and not self._in_request and not self._refused:
            # An answer still under way (a key fetch, a store read): not idle.
            self._deadline = now + self._server.idle_seconds
        if now < self._deadline:
            self._arm(min(self._deadline, now + self._tick))
        elif not self._in_request:
            # Abort, not close: close() would wait for a client that reads nothing to take our
            # unsent answers, holding the socket for good.
            self._transport.abort()
        else:
            self._refuse(_TOO_SLOW)

    def data_received(self, data: bytes) -> None:
        if self._first is not None:
            # The connection's first bytes tell HTTP/2 with prior knowledge from HTTP/1.1.
            data = self._first + data
            if len(data) < len(PREFACE) and PREFACE.startswith(data):
                # Bytes of a request have come: the rest has a request deadline, not the idle one.
                self._first = data
                if not self._in_request:
                    self._in_request = True
                    self._deadline = self._loop.time() + self._server.request_seconds
                return
            if data.startswith(_HTTP2_REQUEST_LINE):
                # HTTP/2, with a whole preface or a wrong one that it refuses with a GOAWAY.
                self._switch_to_http2(data)
                return
            self._first = None
        if self._refused:
            return  # lingering after a refusal: read and dropped (see _refuse)
        begun = self._begun
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._refuse(self._refusal or _BAD_REQUEST)
            return
        if self._head is not None and self._begun == begun:
            # A head that began in an earlier read is still not whole: count all of this read
            # (a read is bounded by the event loop's buffer, so at most that much is parsed past
            # the cap). A head that began in this read is counted by its parts (_count): the
            # read also held the requests before it.
            self._head += len(data)
            if self._head > _MAX_HEAD_BYTES:
                self._refuse(_HEAD_TOO_LARGE)

    def _switch_to_http2(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self.connection_lost(None)
        http2 = Http2CheckProtocol(self._server)
        transport.set_protocol(http2)
        http2.connection_made(transport)
        http2.data_received(data)

    def _refuse(self, answer: bytes) -> None:
        """Answer, then close once the client has had time to read it.

        Closing at once with the rest of the client's request unread would make the kernel
        reset the connection and drop the answer with it. So the write side is shut after the
        answer, and whatever else arrives is read and dropped for a second (nginx's lingering
        close) before the connection closes.
        """
        transport = self._transport
        if transport is None or transport.is_closing() or self._refused:
            return
        self._refused = True
        transport.write(answer)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._in_request, self._head = False, None
        self._deadline = self._loop.time() + _LINGER_SECONDS
        self._arm(self._deadline)

    # -- httptools callbacks ------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._begun += 1
        self._in_body = self._continue = False
        # A request has begun: it has request_seconds to arrive whole.
        self._in_request, self._head, self._head_parts = True, 0, 0
        self._deadline = self._loop.time() + self._server.request_seconds

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        # With its ": " and line end: many empty fields are no cheaper than one long one.
        self._count(len(name) + len(value) + 4)
        if not self._in_body:
            self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
            if len(name) == 6 and name.lower() == b"expect":
                # Noted here, where the header passes anyway, not by scanning every check's head.
                self._continue = value.lower() == b"100-continue"

    def _count(self, size: int) -> None:
        """Parts of a head that arrived within one read: their exact size, framing left out."""
        self._head_parts += size
        if self._head_parts > _MAX_HEAD_BYTES:
            self._refusal = _HEAD_TOO_LARGE
            raise httptools.HttpParserError("request head too large")

    def on_headers_complete(self) -> None:
        self._head = None
        self._in_body = True
        if self._parser.should_upgrade():
            # Upgrade and CONNECT: no check is either; refused like any other bad request,
            # before any answer is written for it.
            raise httptools.HttpParserError("upgrade")
        # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; refused, never guessed.
        if self._parser.get_http_version() == "1.0" and any(
            name.lower() == "transfer-encoding" for name, _ in self._headers
        ):
            raise httptools.HttpParserError("transfer-encoding in HTTP/1.0")
        if self._continue and self._transport is not None:
            # The check needs no body, but the client waits for leave to send it.
            self._transport.write(_CONTINUE)

    def on_message_complete(self) -> None:
        # Between requests now: idle until the next one begins.
        self._in_request, self._head = False, None
        self._deadline = self._loop.time() + self._server.idle_seconds
        method = self._parser.get_method().decode("ascii")
        target = self._url.decode("latin-1")
        keep_alive = self._parser.should_keep_alive()
        check = check_input(method, target, self._headers, self._server.path_prefix, self._memo)
        head = method == "HEAD"
        if not self._waiting:
            # Most checks need no I/O: answer them here, without scheduling a task.
            started = time.perf_counter()
            decision = self._server.decide_now(check)
            if decision is not None:
                self._answer(decision, keep_alive, head, started)
                return
        self._queue.append((check, keep_alive, head))
        if not self._waiting:
            self._start_worker()

    # -- answering ----------------------------------------------------------------
    def _start_worker(self) -> None:
        self._waiting = True
        # Held here: the loop keeps only a weak reference to a task.
        self._worker = self._loop.create_task(self._work())

    async def _work(self) -> None:
        """Answer queued checks in order; one task per burst of requests on this connection."""
        try:
            while self._queue:
                check, keep_alive, head = self._queue.popleft()
                started = time.perf_counter()
                decision = await self._server.decide(check)
                self._answer(decision, keep_alive, head, started)
        finally:
            self._waiting = False

    def _answer(self, decision: Decision, keep_alive: bool, head: bool, started: float) -> None:
        transport = self._transport
        if transport is None or self._refused:
            return
        transport.write(self._server.reply(decision, keep_alive, head))
        if not keep_alive:
            transport.close()
        if self._server.metrics is not None:
            self._server.metrics.observe("http", decision, time.perf_counter() - started)
