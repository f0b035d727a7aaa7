"""The edge's HTTP/1.1 server protocol: uvicorn's httptools protocol with the limits an edge owes
its upstreams before any route sees a request.

- The request head (request line and headers) is capped (``gateway.max_request_head_bytes``,
  64 KiB: Envoy's default ``max_request_headers_kb`` is 60): an 18 MB header block gets 431, it
  is not buffered.
- A client has ``gateway.client_head_seconds`` (30) to send a whole head once it connects or
  starts a request (408), and ``gateway.client_body_idle_seconds`` (30) between pieces of a body
  it has announced (408 before the answer started, else the connection closes): a connection
  that trickles bytes cannot be held open forever (slowloris).
- An HTTP/1.1 request needs exactly one ``Host`` (RFC 9112 3.2), and versions other than 1.0 and
  1.1 are refused (505).
- Trailer fields stay trailers: they are never added to the request's headers.
- Every refusal is JSON with a reason and a request id, like the gateway's other errors; the
  connection is closed after it, since the request's framing can no longer be trusted.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.headers import request_id

__all__ = ["GatewayHttpProtocol"]

_VERSIONS = ("1.0", "1.1")


class _Refused(Exception):
    """Raised from a parser callback: the parser stops, and the client gets this answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


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
        self._head_bytes = 0
        self._in_head = False
        self._refusal: _Refused | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- timers ----------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle
        if self._in_head or (cycle is not None and not cycle.response_started):
            self._refuse(_Refused(408, "request_timeout"))
        else:
            # Not a head, or an answer already under way: nothing left to say on this connection.
            self.transport.close()

    # -- connection ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        try:
            super().data_received(data)
        finally:
            self._refusal = None

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to any parser error, here JSON with the reason we know.
        self._refuse(self._refusal or _Refused(400, "invalid_http_request"))

    # -- parser callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True
        self._arm(self.head_seconds)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer field: not a request header
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        version = self.parser.get_http_version()
        if version not in _VERSIONS:
            self._stop(_Refused(505, "http_version_not_supported"))
        if version == "1.1" and sum(1 for name, _ in self.headers if name == b"host") != 1:
            self._stop(_Refused(400, "invalid_host"))
        has_body = any(
            name in (b"content-length", b"transfer-encoding") for name, _ in self.headers
        )
        if has_body:
            self._arm(self.body_idle_seconds)
        else:
            self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._arm(self.body_idle_seconds)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # -- refusing ----------------------------------------------------------------------
    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            self._stop(_Refused(431, "headers_too_large"))

    def _stop(self, refusal: _Refused) -> None:
        self._refusal = refusal
        raise refusal

    def _refuse(self, refusal: _Refused) -> None:
        self._disarm()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        rid = request_id([])
        body = json.dumps(
            {"error": _ERRORS.get(refusal.status, "bad_request"), "reason": refusal.reason,
             "request_id": rid}
        ).encode()  # fmt: skip
        head = (
            f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"x-request-id: {rid}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        transport.write(head + body)
        transport.close()


_ERRORS = {
    408: "request_timeout",
    431: "request_header_fields_too_large",
    505: "http_version_not_supported",
}
