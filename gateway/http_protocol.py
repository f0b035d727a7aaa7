"""The edge's HTTP/1.1 server protocol: uvicorn's httptools protocol with the limits an edge owes
its upstreams before any route sees a request.

- The request head (request line and headers) is capped (``gateway.max_request_head_bytes``,
  64 KiB: Envoy's default ``max_request_headers_kb`` is 60): an 18 MB header block gets 431, it
  is not buffered.
- A client has ``gateway.client_head_seconds`` (30) to send a whole head once it connects or
  starts a request (408), and ``gateway.client_body_idle_seconds`` (30) between pieces of a body
  it has announced (408 before the answer started, else the connection closes): a connection
  that trickles bytes cannot be held open forever (slowloris).
- An HTTP/1.1 request needs exactly one ``Host`` (RFC 9112 3.2), versions other than 1.0 and
  1.1 are refused (505), a body whose last transfer coding is not ``chunked`` gets 400 (no length
  can be read from it) and a coding before ``chunked`` gets 501 (re-framing would drop it).
- A request asking to upgrade (``Connection: upgrade``) is served as a plain one, since the
  gateway serves no upgrade, and a request pipelined behind it is served next.
- Trailer fields stay trailers: they are never added to the request's headers. What a body
  carries besides its data (chunk framing and extensions, trailer fields) is held to the same
  cap, counted from the last data byte: a client cannot stream an endless trailer (431).
- Each request's scope carries its connection's own state (``gateway.asgi.CONNECTION``), for
  what a policy keeps between one client's requests.
- Each request's response head is written by :class:`gateway.http_cycle.ResponseCycle`.
- Every refusal is JSON with a reason and a request id, like the gateway's other errors; the
  connection is closed after it, since the request's framing can no longer be trusted.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.asgi import CONNECTION
from gateway.errors import (
    CLIENT_GONE,
    GatewayError,
    HeadersTooLarge,
    MalformedRequest,
    RequestTimeout,
    UnsupportedCoding,
    VersionNotSupported,
)
from gateway.headers import request_id
from gateway.http_cycle import ResponseCycle
from gateway.responses import error_body

__all__ = ["GatewayHttpProtocol"]


class GatewayHttpProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    head_seconds = 30.0
    body_idle_seconds = 30.0

    @classmethod
    def limited(
        cls, *, max_head_bytes: int, head_seconds: float, body_idle_seconds: float
    ) -> type[GatewayHttpProtocol]:
        """This protocol with other limits: uvicorn builds one per connection from a class."""
        limits = {
            "max_head_bytes": max_head_bytes,
            "head_seconds": head_seconds,
            "body_idle_seconds": body_idle_seconds,
        }
        return type(cls.__name__, (cls,), limits)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Between a message's end (or the connection's start) and the next head's end: the bytes
        # read meanwhile are a head's.
        self._reading_head = True
        self._head_bytes = 0
        # Heads completed on this connection: a read that completes one is not counted as head.
        self._heads = 0
        # Bytes read inside a message since its last data byte (framing, trailer fields), and
        # whether the current read delivered a data byte.
        self._beside_body = 0
        self._fed_body = False
        self._refusal: GatewayError | None = None
        # What the client owes by ``_deadline``: a "head" (the next request's, from the
        # connection's start or the last message's end), a "body" it announced, or None. One
        # timer per connection, re-armed lazily when it fires early: a request only writes a
        # float, it never schedules or cancels a timer.
        self._owed: str | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # What policies keep between this connection's requests (gateway.asgi.CONNECTION).
        self._state: dict[object, Any] = {}

    # -- the deadline ------------------------------------------------------------------
    def _expect(self, owed: str, seconds: float) -> None:
        self._owed = owed
        self._deadline = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        transport = self.transport
        if self._owed is None or transport is None or transport.is_closing():
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)
            return
        cycle = self.cycle
        if self._owed == "head" and cycle is not None and not cycle.response_complete:
            # A pipelined head while an answer is still going out: the answer is not cut short
            # for it; the head is judged once the answer is done.
            self._expect("head", self.head_seconds)
            return
        if self._owed == "head" and self._head_bytes > 0:
            self._refuse(RequestTimeout("request_timeout"))
        elif self._owed == "body":
            self._refuse_mid_request(RequestTimeout("request_timeout"))
        else:
            # Idle with no request begun: nothing to say on this connection.
            transport.close()

    def _stop_timer(self) -> None:
        self._owed = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- connection ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("head", self.head_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        task = getattr(self.cycle, "task", None)
        if task is not None and not self.cycle.response_started and not task.done():
            # The client left before its answer began: stop working for it, as Envoy resets
            # the upstream stream. Waiting out a slow upstream would hold one of its
            # max_requests slots and a connection for an answer nobody reads.
            task.cancel(CLIENT_GONE)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        reading_head, heads = self._reading_head, self._heads
        self._fed_body = False
        self._feed(data)
        if not reading_head:
            if not self._reading_head and not self._fed_body and self._heads == heads:
                # A read inside a body that carried no data: chunk framing or trailer fields,
                # which httptools would otherwise buffer without end. Capped like a head.
                self._beside_body += len(data)
                if self._beside_body > self.max_head_bytes:
                    self._refuse_mid_request(HeadersTooLarge("headers_too_large"))
        elif self._reading_head and self._heads == heads:
            # No head ended in this read, which began and ended inside one: all of it was head.
            # Counted per read, not per header (a head usually arrives whole, in one read, and
            # its exact size is checked when it ends); one read is bounded by the event loop's
            # buffer, so at most that much is parsed past the cap.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(HeadersTooLarge("headers_too_large"))
            elif self._owed is None:
                # The first bytes of a head after an answer: from now on the client owes it.
                self._expect("head", self.head_seconds)

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received`` (0.54), except for a request that asks to upgrade.

        The gateway serves no upgrade (``ws="none"``, and ``Upgrade`` is hop-by-hop): such a
        request is answered as a plain one, and what follows it in the same read is the next
        request. uvicorn would drop those bytes, leaving a pipelined request unanswered, and log
        two warnings per request for any client to repeat.
        """
        self._unset_keepalive_if_required()
        rest = memoryview(data)
        while True:
            try:
                self.parser.feed_data(rest)
                return
            except httptools.HttpParserError:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
                return
            except httptools.HttpParserUpgrade as upgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                    return
                # Where the upgrade request ended: a view, so no read is copied per request.
                rest = rest[upgrade.args[0] if upgrade.args else len(rest) :]
                if not rest:
                    return

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to any parser error, here JSON with the reason we know.
        refusal, self._refusal = self._refusal, None
        self._refuse(refusal or MalformedRequest("invalid_http_request"))

    # -- parser callbacks --------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._heads += 1
        self._head_bytes = 0
        hosts = 0
        has_body = False
        size = len(self.url)
        for name, value in self.headers:
            size += len(name) + len(value)
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                has_body = True
            elif name == b"transfer-encoding":
                has_body = True
                codings = value.lower().split(b",")
                if codings[-1].strip() != b"chunked":
                    # No length can be read from it (RFC 9112 6.3): the smuggler's framing.
                    self._stop(MalformedRequest("invalid_http_request"))
                if len(codings) > 1:
                    # A coding before chunked, which re-framing the body would drop (6.1).
                    self._stop(UnsupportedCoding("unsupported_transfer_coding"))
        if size > self.max_head_bytes:
            # A head that arrived within one read: its exact size, the framing left out.
            self._stop(HeadersTooLarge("headers_too_large"))
        version = self.parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._stop(VersionNotSupported("http_version_not_supported"))
        if hosts != 1 and version == "1.1":
            self._stop(MalformedRequest("invalid_host"))
        if has_body:
            self._beside_body = 0
            self._expect("body", self.body_idle_seconds)
        else:
            self._owed = None
        self.scope[CONNECTION] = self._state  # type: ignore[literal-required]
        self._start_request(version)
        # The request's scope keeps its headers; trailer fields, parsed with the same callback,
        # land in this spare list and are never request headers.
        self.headers = []

    def _start_request(self, version: str) -> None:
        """uvicorn's ``on_headers_complete`` (0.54), with the gateway's response cycle.

        The cycle's class is chosen here, where it is built: a cycle whose class changed after
        it was built would make every attribute lookup in uvicorn's own methods miss the
        interpreter's per-type caches.
        """
        scope = self.scope
        scope["method"] = self.parser.get_method().decode("ascii")
        if version != "1.1":
            scope["http_version"] = version
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = url.query or b""
        app = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        existing = self.cycle
        self.cycle = ResponseCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing is None or existing.response_complete:
            self._start_asgi_task(self.cycle, app)
        else:
            # A pipelined request waits for the answers before it.
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))

    def _start_asgi_task(self, cycle: ResponseCycle, app: Any) -> None:  # type: ignore[override]
        """uvicorn's (0.54; the gateway leaves reset_contextvars off), keeping the task on the
        cycle for ``connection_lost``."""
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        cycle.task = task

    def on_body(self, body: bytes) -> None:
        self._deadline = self.loop.time() + self.body_idle_seconds
        self._fed_body = True
        self._beside_body = 0
        super().on_body(body)

    def on_message_complete(self) -> None:
        # The client owes nothing while the answer is produced, however long it takes (a slow
        # upstream, a stream of events); the next head owes from its first byte, and an idle
        # keep-alive connection is closed by uvicorn's timeout_keep_alive.
        self._reading_head = True
        self._owed = None
        super().on_message_complete()

    # -- refusing ----------------------------------------------------------------------
    def _stop(self, refusal: GatewayError) -> None:
        """Stop the parser from one of its callbacks; uvicorn then calls send_400_response."""
        self._refusal = refusal
        raise refusal

    def _refuse_mid_request(self, refusal: GatewayError) -> None:
        """Refuse the request whose body is being read; once its answer has begun, there is
        nothing left to say on this connection but to close it."""
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self._stop_timer()
            if self.transport is not None:
                self.transport.close()
        else:
            self._refuse(refusal)

    def _refuse(self, refusal: GatewayError) -> None:
        self._stop_timer()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        rid = request_id([])
        body = error_body(refusal, rid)
        head = (
            f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"x-request-id: {rid}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        transport.write(head + body)
        transport.close()
