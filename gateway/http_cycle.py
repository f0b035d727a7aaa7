"""The edge's request/response cycle: uvicorn's, with the response head written in one pass.

uvicorn checks each response header with two regular expressions, lower-cases it and appends it
in a Python loop, and a route's policies add several headers to every answer (CORS, rate
limits). Here the head is built and checked by a few C loops over all of it, with uvicorn's
rules: the characters a name or a value may not hold are refused one by one, so checking the
names joined together (and the values joined together) refuses exactly what checking each one
refuses. Everything else uvicorn does with a head is the same: the same errors for a bad name or
value, names lower-cased, the framing read from ``Content-Length``, ``Transfer-Encoding`` and
``Connection``, ``Transfer-Encoding: chunked`` added when an answer with a body names no length.

Anything unusual (a paused transport, uvicorn's access log, a header that is not a pair of
bytes or that uvicorn refuses) goes to uvicorn's own ``send``, as does every body message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator, Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HEADER_RE, STATUS_LINE, RequestResponseCycle

__all__ = ["ResponseCycle"]

# What a value may hold: uvicorn's HEADER_VALUE_RE refuses the rest (controls but tab, DEL).
# A translation table that keeps those and changes every other byte: values translate to
# themselves exactly when they are clean (a table without deletions is one pass, no setup).
_ALLOWED_IN_VALUES = frozenset(b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)))
_VALUE_CHECK = bytes(c if c in _ALLOWED_IN_VALUES else c ^ 0x80 for c in range(256))


class _Written:
    """What ``send`` hands back once the head is written: an awaitable that is already done."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_WRITTEN = _Written()
# Header containers read twice as they are: any other iterable is copied into a list first.
_SEQUENCES = (list, tuple)


class ResponseCycle(RequestResponseCycle):
    # The task running the app for this request, set by GatewayHttpProtocol when it starts it:
    # cancelled if the client leaves before its answer begins (see its connection_lost).
    task: asyncio.Task[None] | None = None

    # Not a coroutine: a head is written at once, so there is nothing to wait for.
    def send(self, message: Any) -> Awaitable[None]:  # type: ignore[override]
        if (
            self.response_started
            or message["type"] != "http.response.start"
            or self.disconnected
            or self.flow.write_paused
            or self.access_log
        ):
            return RequestResponseCycle.send(self, message)
        head = self._start(message["status"], message.get("headers", ()))
        if head is None:
            return RequestResponseCycle.send(self, message)
        self.transport.write(head)
        return _WRITTEN

    def _start(self, status: int, given: Iterable[Any]) -> bytes | None:
        """The response started: its head, with uvicorn's state for it set; or None, before
        anything is set, when uvicorn's own ``send`` is to start it."""
        default = self.default_headers
        try:
            headers = [*default, *given] if default or type(given) not in _SEQUENCES else given
            # strict: every header is a pair, or this fails before anything is checked or set.
            names, values = zip(*headers, strict=True)
            packed = b"".join(names)
            packed_values = b"".join(values)
            lines = b"\r\n".join(map(b": ".join, headers))
        except (TypeError, ValueError):
            return None
        # Letters, digits and '-' (every name in practice) need no closer look. A name or value
        # uvicorn refuses is refused by uvicorn itself: the same error, the same state after it.
        if not packed.replace(b"-", b"").isalnum() and HEADER_RE.search(packed):
            return None
        if packed_values.translate(_VALUE_CHECK) != packed_values:
            return None
        # Started from here on, as uvicorn has it before an error (a bad Content-Length).
        self.response_started = True
        self.waiting_for_100_continue = False
        if packed.lower() != packed:
            names = tuple(name.lower() for name in names)
            lines = b"\r\n".join(map(b": ".join, zip(names, values, strict=True)))
        head = [STATUS_LINE[status], lines, b"\r\n"]
        has_connection_close = False
        if b"transfer-encoding" in names or b"connection" in names:
            # In uvicorn's order: the first Content-Length counts unless a Transfer-Encoding of
            # exactly "chunked" came too.
            for name, value in zip(names, values, strict=True):
                if name == b"content-length" and self.chunked_encoding is None:
                    self.expected_content_length = int(value.decode())
                    self.chunked_encoding = False
                elif name == b"transfer-encoding" and value.lower() == b"chunked":
                    self.expected_content_length = 0
                    self.chunked_encoding = True
                elif name == b"connection" and b"close" in [
                    token.lower().strip() for token in value.split(b",")
                ]:
                    self.keep_alive = False
                    has_connection_close = True
        elif b"content-length" in names:
            self.expected_content_length = int(values[names.index(b"content-length")].decode())
            self.chunked_encoding = False
        if not self.keep_alive and not has_connection_close:
            head.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            self.chunked_encoding = True
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        return b"".join(head)
