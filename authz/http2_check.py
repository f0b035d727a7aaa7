"""HTTP/2 with prior knowledge (h2c) for the HTTP check listener: the wire, not the decision.

Envoy keeps one connection per worker thread to the check cluster. Over HTTP/1.1 that
connection carries one check at a time; over HTTP/2 (``http2_protocol_options`` on the cluster)
it carries them all at once, and Envoy writes many checks in one system call. Measured on this
project's bench machine, that takes 10-17% off Envoy's CPU per check, and half off ours, since
one read brings many checks and all their answers leave in one write.

The listener hands a connection here when it opens with the HTTP/2 connection preface (RFC 9113
3.4), so one port serves both protocols. A check needs little of HTTP/2: requests are HEADERS
(DATA and trailers are read and dropped), answers are HEADERS and at most one DATA frame. There
is no push, priorities are ignored, and no upgrade from HTTP/1.1 (RFC 9113 drops it).

Whoever can reach the port is held to limits, the same as over HTTP/1.1 where both exist:

- a header block over 128 KiB before decoding ends the connection (ENHANCE_YOUR_CALM): a
  CONTINUATION flood is cut at a bounded cost;
- a decoded field list over 64 KiB gets 431 on its stream, as an HTTP/1.1 head over 64 KiB does;
- at most ``MAX_STREAMS`` streams at once, and a stream still waiting on I/O counts even after
  its client reset it, so resetting streams (CVE-2023-44487) cannot pile up work;
- a stream must end within ``request_seconds`` or get 408, and a connection with no stream is
  closed after ``idle_seconds`` with a GOAWAY;
- a peer that does not read what we write (answers, PING and SETTINGS acknowledgements) is not
  read either until our write buffer drains, and an answer it opens no window for gets
  ``request_seconds`` to leave before its stream is reset;
- a malformed request (RFC 9113 8.1.1) is reset with PROTOCOL_ERROR, never decided.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, cast

from authz.backpressure import BackPressured
from authz.check import CheckInput, Decision, deny
from authz.hpack import (
    MAX_CACHED_BLOCK,
    HeaderListTooLarge,
    HpackDecoder,
    HpackError,
    encode_headers,
)
from authz.http_check import answer, check_input
from authz.tokens import CredentialMemo

if TYPE_CHECKING:
    from authz.http_server import HttpCheckServer

__all__ = ["MAX_STREAMS", "PREFACE", "Http2CheckProtocol"]

log = logging.getLogger("doma.authz.http2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_STREAMS = 256
_MAX_HEADER_LIST = 64 * 1024
_MAX_HEADER_BLOCK = 2 * _MAX_HEADER_LIST
_MAX_FRAME = 16_384  # SETTINGS_MAX_FRAME_SIZE: ours stays the default
_DEFAULT_WINDOW = 65_535
_MAX_WINDOW = 2**31 - 1
_LINGER_SECONDS = 1.0

# Frame types and flags (RFC 9113 6).
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE = 0, 1, 2, 3, 4, 5
_PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 6, 7, 8, 9
_END_STREAM = _ACK = 0x1
_END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x4, 0x8, 0x20

# Error codes (RFC 9113 7).
_NO_ERROR, _PROTOCOL_ERROR, _INTERNAL_ERROR, _FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
_STREAM_CLOSED, _FRAME_SIZE_ERROR, _REFUSED_STREAM = 0x5, 0x6, 0x7
_CANCEL, _COMPRESSION_ERROR, _ENHANCE_YOUR_CALM = 0x8, 0x9, 0xB

# Settings (RFC 9113 6.5.2).
_HEADER_TABLE_SIZE, _ENABLE_PUSH, _MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
_INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE, _MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

# Names that only HTTP/1.1 connections carry (RFC 9113 8.2.2); "te" may only be "trailers".
_CONNECTION_HEADERS = frozenset(
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]
)
_REQUEST_PSEUDO = frozenset([":method", ":scheme", ":path", ":authority"])
# A lower-case token (RFC 9110 5.6.2), or one of the pseudo-header names above.
_FIELD_NAME = re.compile(r"(?::[a-z]+|[!#$%&'*+\-.^_`|~0-9a-z]+)\Z").match


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload
    )


def _settings_frame() -> bytes:
    entries = (
        (_MAX_CONCURRENT_STREAMS, MAX_STREAMS),
        (_MAX_HEADER_LIST_SIZE, _MAX_HEADER_LIST),
        (_ENABLE_PUSH, 0),
    )
    payload = b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in entries)
    return _frame(_SETTINGS, 0, 0, payload)


_SERVER_PREFACE = _settings_frame()
_SETTINGS_ACK = _frame(_SETTINGS, _ACK, 0)


_HEAD_TOO_LARGE = deny(431, "headers_too_large")
_TOO_SLOW = deny(408, "request_timeout")


def answer_blocks(decision: Decision, head: bool) -> tuple[bytes, bytes]:
    """The HPACK block and the body answering ``decision``; to HEAD, no body (RFC 9110 9.3.2).

    The same fields as the HTTP/1.1 answer (authz/http_check.py), values in UTF-8 as there.
    """
    status, headers, body = answer(decision)
    fields = [(":status", str(status))]
    # HPACK strings are octets, one code point each (authz/hpack.py): a value's UTF-8 bytes go
    # in as such, so a claim reaches the wire as the same bytes both protocols send.
    fields.extend((name.lower(), value.encode().decode("latin-1")) for name, value in headers)
    if body:
        # An empty answer ends with its HEADERS frame: no length for Envoy to read.
        fields.append(("content-length", str(len(body))))
    return encode_headers(fields), (b"" if head else body)


class _Stream:
    __slots__ = ("ended", "orphaned", "request", "started", "waiting", "window")

    def __init__(self, started: float, window: int):
        self.started = started
        # The check its header block makes (without the connection's memo); None until then.
        self.request: CheckInput | None = None
        self.ended = False  # the client sent END_STREAM
        self.waiting = False  # a task decides it (a key fetch, a store read)
        self.orphaned = False  # reset or refused while waiting: counted in _orphans
        self.window = window  # what we may still send on it (flow control)


class _ConnectionError(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code


class Http2CheckProtocol(BackPressured):
    """One HTTP/2 connection from Envoy: checks in, answers out, in any order."""

    def __init__(self, server: HttpCheckServer):
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._decoder = HpackDecoder(max_header_list_size=_MAX_HEADER_LIST)
        self._memo = CredentialMemo()
        # The start of a frame (or of the preface) whose rest has not arrived, and the bytes
        # needed before it can be read.
        self._partial = bytearray()
        self._needed = 0
        self._preface = False
        self._streams: dict[int, _Stream] = {}
        self._last_stream = 0
        # Streams the client reset while a task still decides them: they count against
        # MAX_STREAMS until the task ends, so reset streams cannot pile up work.
        self._orphans = 0
        # Field names already found well-formed: Envoy sends the same few on every check.
        self._valid_names: set[str] = set()
        # Header block -> (its fields, the check they make): the decoder hands back the very
        # list it gave before for a block it has seen, so a repeated check is parsed once.
        # Bounded in fields as well as entries: the lists are held as long as the entries.
        self._requests: dict[bytes, tuple[list[tuple[str, str]], CheckInput | None]] = {}
        self._requested_fields = 0
        self._peer_gone = False
        # A header block split over CONTINUATION frames: its stream, bytes so far, END_STREAM.
        self._block_stream = 0
        self._block = bytearray()
        self._block_ends_stream = False
        self._block_started = 0.0
        # Streams we reset (or answered before they ended) lately: what the client sent on
        # them before it saw our RST_STREAM is ignored (RFC 9113 5.1), a header block decoded
        # for the table's sake only. Bounded: an older one is just closed.
        self._reset_by_us: dict[int, None] = {}
        # Tasks deciding checks that wait on I/O: the loop keeps only weak references.
        self._tasks: set[asyncio.Task[None]] = set()
        # Flow control of what we send: the connection's window, the peer's initial stream
        # window and its largest frame. What we receive is acknowledged as it arrives.
        self._window = _DEFAULT_WINDOW
        self._initial_window = _DEFAULT_WINDOW
        self._peer_max_frame = _MAX_FRAME
        self._pending: dict[int, bytes] = {}  # bodies waiting for window
        # Those of them that wait for the connection's window only, their streams' being open:
        # a WINDOW_UPDATE of the connection walks these, not every waiting body.
        self._want_connection_window: dict[int, None] = {}
        # Writes made while reading one chunk leave together, in one system call.
        self._out: list[bytes] | None = None
        self._closing = False
        self._idle_since = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._tick = min(server.request_seconds, server.idle_seconds) / 2

    @property
    def busy(self) -> bool:
        return any(stream.waiting for stream in self._streams.values())

    # -- connection ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._server._connections.add(self)
        self._transport.write(_SERVER_PREFACE)
        self._timer = self._loop.call_later(self._tick, self._check_deadlines)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None
        self._streams.clear()
        self._pending.clear()
        self._want_connection_window.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Say goodbye (GOAWAY naming the last stream we took), then close."""
        self._goaway(_NO_ERROR)

    def _write(self, data: bytes) -> None:
        if self._closing:
            return  # after our GOAWAY nothing more is sent: our side is shut (see _goaway)
        if self._out is not None:
            self._out.append(data)
        elif self._transport is not None:
            self._transport.write(data)

    def _goaway(self, code: int) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        payload = self._last_stream.to_bytes(4, "big") + code.to_bytes(4, "big")
        self._write(_frame(_GOAWAY, 0, 0, payload))
        self._closing = True
        self._flush()
        if not transport.can_write_eof():
            transport.close()
            return
        # Closing with bytes of the client's unread would reset the connection and drop the
        # GOAWAY with it: shut our side, drop what still comes, and close after a second
        # (nginx's lingering close), or sooner when the client closes. Abort, not close: a
        # client that has not read what we wrote by then never will, and close() would wait
        # for it to, holding the socket and our unsent bytes for good.
        try:
            transport.write_eof()
        except OSError:  # the client is gone already
            transport.close()
            return
        self._loop.call_later(_LINGER_SECONDS, transport.abort)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and self._transport is not None:
            self._transport.write(b"".join(out))

    def _check_deadlines(self) -> None:
        self._timer = None
        if self._transport is None or self._closing:
            return
        now = self._loop.time()
        expired = now - self._server.request_seconds
        if self._block_stream and self._block_started < expired:
            # A header block never finished: nothing can be answered on that connection.
            self._goaway(_PROTOCOL_ERROR)
            return
        late = [
            sid
            for sid, stream in self._streams.items()
            if stream.started < expired and not stream.waiting
        ]
        for sid in late:
            if sid in self._pending:
                # An answer the client gave no window for in a whole deadline: it gives up its
                # place, or a client that never opens a window would hold its streams forever.
                self._reset(sid, _CANCEL)
            else:
                self._answer(sid, _TOO_SLOW, head=False, started=time.perf_counter())
        if not self._streams and now - self._idle_since >= self._server.idle_seconds:
            self._goaway(_NO_ERROR)
            return
        self._timer = self._loop.call_later(self._tick, self._check_deadlines)

    # -- reading ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._partial:
            # A frame arriving in pieces is gathered in place until it is whole: copying the
            # pieces so far at every read would cost a byte-at-a-time sender quadratic time.
            self._partial += data
            if len(self._partial) < self._needed:
                return
            buffer, self._partial = bytes(self._partial), bytearray()
        else:
            buffer = data
        self._out = []
        try:
            self._read_frames(buffer)
        except _ConnectionError as error:
            log.debug("connection error: %s", error)
            self._goaway(error.code)
        except Exception:
            # A fault of ours: this connection ends (its streams fail closed), the server goes on.
            log.exception("HTTP/2 connection failed")
            self._goaway(_INTERNAL_ERROR)
        self._flush()

    def _read_frames(self, buffer: bytes) -> None:
        position = 0
        if not self._preface:
            position = self._read_preface(buffer)
            if not self._preface:
                self._keep_partial(buffer)
                return
        size = len(buffer)
        while size - position >= 9:
            length = int.from_bytes(buffer[position : position + 3], "big")
            if length > _MAX_FRAME:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "frame larger than SETTINGS")
            end = position + 9 + length
            if end > size:
                break
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream = int.from_bytes(buffer[position + 5 : position + 9], "big") & _MAX_WINDOW
            payload = buffer[position + 9 : end]
            position = end
            self._on_frame(kind, flags, stream, payload)
            if self._closing:
                return
        if position < size:
            self._keep_partial(buffer[position:])

    def _keep_partial(self, rest: bytes) -> None:
        self._partial = bytearray(rest)
        if not self._preface:
            self._needed = len(PREFACE)
        elif len(rest) < 9:
            self._needed = 9
        else:
            self._needed = 9 + int.from_bytes(rest[:3], "big")

    def _read_preface(self, buffer: bytes) -> int:
        if len(buffer) < len(PREFACE):
            if not PREFACE.startswith(buffer):
                raise _ConnectionError(_PROTOCOL_ERROR, "no connection preface")
            return 0  # kept whole until the rest of the preface arrives
        if not buffer.startswith(PREFACE):
            raise _ConnectionError(_PROTOCOL_ERROR, "no connection preface")
        self._preface = True
        return len(PREFACE)

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._block_stream:
            # RFC 9113 6.10: nothing may come between a header block's frames.
            if kind != _CONTINUATION or sid != self._block_stream:
                raise _ConnectionError(_PROTOCOL_ERROR, "header block interrupted")
            self._on_continuation(flags, payload)
        elif kind == _HEADERS:
            self._on_headers(flags, sid, payload)
        elif kind == _DATA:
            self._on_data(flags, sid, payload)
        elif kind == _SETTINGS:
            self._on_settings(flags, sid, payload)
        elif kind == _PING:
            if sid:
                raise _ConnectionError(_PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "PING of the wrong size")
            if not flags & _ACK:
                self._write(_frame(_PING, _ACK, 0, payload))
        elif kind == _WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif kind == _RST_STREAM:
            if len(payload) != 4:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
            self._idle_or_known(sid)
            self._end_stream(sid)
        elif kind == _PRIORITY:
            if not sid:
                raise _ConnectionError(_PROTOCOL_ERROR, "PRIORITY on the connection")
            if len(payload) != 5:
                self._reset(sid, _FRAME_SIZE_ERROR)
            elif int.from_bytes(payload[:4], "big") & _MAX_WINDOW == sid:
                self._reset(sid, _PROTOCOL_ERROR)  # a stream cannot depend on itself (5.3.1)
        elif kind == _GOAWAY:
            if sid:
                raise _ConnectionError(_PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "GOAWAY too short")
            # The client opens no more streams; answer the ones it has, then close.
            self._closing_when_done()
        elif kind in (_PUSH_PROMISE, _CONTINUATION):
            raise _ConnectionError(_PROTOCOL_ERROR, "unexpected frame")
        # Any other type is an extension and is ignored (RFC 9113 5.5).

    def _idle_or_known(self, sid: int) -> None:
        # We open no streams: an even one is idle as long as the connection lives.
        if not sid or sid > self._last_stream or not sid % 2:
            raise _ConnectionError(_PROTOCOL_ERROR, "frame on an idle stream")

    def _closing_when_done(self) -> None:
        self._peer_gone = True
        if not self._streams:
            self._goaway(_NO_ERROR)

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise _ConnectionError(_PROTOCOL_ERROR, "HEADERS on the connection")
        payload = _unpad(flags, payload)
        if flags & _PRIORITY_FLAG:
            if len(payload) < 5:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "short priority fields")
            if int.from_bytes(payload[:4], "big") & _MAX_WINDOW == sid:
                raise _ConnectionError(_PROTOCOL_ERROR, "a stream that depends on itself")
            payload = payload[5:]
        stream = self._streams.get(sid)
        if stream is None:
            if sid in self._reset_by_us:
                self._begin_block(sid, flags, payload)
                return
            if sid <= self._last_stream:
                raise _ConnectionError(_STREAM_CLOSED, "HEADERS on a closed stream")
            if not sid % 2:
                raise _ConnectionError(_PROTOCOL_ERROR, "even stream id from a client")
            self._last_stream = sid
            self._streams[sid] = _Stream(self._loop.time(), self._initial_window)
        elif stream.ended or stream.request is None:
            raise _ConnectionError(_PROTOCOL_ERROR, "HEADERS after the request ended")
        elif not flags & _END_STREAM:
            # Trailers must end the stream (RFC 9113 8.1); treated as a connection error, as
            # RFC 9113 5.4.1 allows, so a block left half-read cannot put the table out of step.
            raise _ConnectionError(_PROTOCOL_ERROR, "trailers that do not end the stream")
        self._begin_block(sid, flags, payload)

    def _begin_block(self, sid: int, flags: int, payload: bytes) -> None:
        ends = bool(flags & _END_STREAM)
        if flags & _END_HEADERS:
            self._on_block(sid, payload, ends)
            return
        self._block_stream, self._block_ends_stream = sid, ends
        self._block = bytearray(payload)
        self._block_started = self._loop.time()

    def _on_continuation(self, flags: int, payload: bytes) -> None:
        self._block += payload
        if len(self._block) > _MAX_HEADER_BLOCK:
            raise _ConnectionError(_ENHANCE_YOUR_CALM, "header block too large")
        if flags & _END_HEADERS:
            sid, block = self._block_stream, bytes(self._block)
            self._block_stream, self._block = 0, bytearray()
            self._on_block(sid, block, self._block_ends_stream)

    def _decode(self, block: bytes) -> list[tuple[str, str]] | None:
        """The block's fields, or None when there are too many to take; the decoder's table
        stays in step either way. A block that cannot be decoded ends the connection."""
        if len(block) > _MAX_HEADER_BLOCK:
            raise _ConnectionError(_ENHANCE_YOUR_CALM, "header block too large")
        try:
            return self._decoder.decode(block)
        except HeaderListTooLarge:
            return None
        except HpackError as exc:
            raise _ConnectionError(_COMPRESSION_ERROR, str(exc)) from None

    def _on_block(self, sid: int, block: bytes, ends: bool) -> None:
        fields = self._decode(block)
        stream = self._streams.get(sid)
        if stream is None:
            return  # a stream we reset: decoded for the table's sake, then dropped
        if stream.request is not None:
            # Trailers: read for the table's sake, never headers of the check; with a
            # pseudo-header field or a name not a lower-case token, malformed (RFC 9113 8.1).
            if fields is not None and not all(
                _FIELD_NAME(name) and not name.startswith(":") for name, _ in fields
            ):
                self._reset(sid, _PROTOCOL_ERROR)
                return
            stream.ended = True
            self._decide(sid, stream)
            return
        if len(self._streams) + self._orphans > MAX_STREAMS:
            # Decoded all the same, so the table stays in step; Envoy may send it again.
            self._reset(sid, _REFUSED_STREAM)
            return
        if fields is None:
            stream.ended = ends
            self._answer(sid, _HEAD_TOO_LARGE, head=False, started=time.perf_counter())
            return
        request = self._request(block, fields)
        if request is None:
            self._reset(sid, _PROTOCOL_ERROR)
            return
        stream.request = request
        stream.ended = ends
        if ends:
            self._decide(sid, stream)

    def _request(self, block: bytes, fields: list[tuple[str, str]]) -> CheckInput | None:
        """The check ``fields`` make, None when they are malformed; parsed once per block."""
        seen = self._requests.get(block)
        if seen is not None and seen[0] is fields:
            return seen[1]
        request = None
        if _well_formed(fields, self._valid_names):
            method = path = ""
            headers: list[tuple[str, str]] = []
            for name, value in fields:
                if name[0] != ":":
                    headers.append((name, value))
                elif name == ":method":
                    method = value
                elif name == ":path":
                    path = value
                elif name == ":authority":
                    # Where HTTP/1.1 carries it: both protocols hand the core the same request.
                    headers.append(("host", value))
            request = check_input(method, path, headers, self._server.path_prefix)
        if len(block) > MAX_CACHED_BLOCK:
            return request  # the decoder never hands its list back: nothing to remember
        if len(self._requests) >= 64 or self._requested_fields + len(fields) > 1024:
            self._requests.clear()
            self._requested_fields = 0
        self._requests[block] = (fields, request)
        self._requested_fields += len(fields)
        return request

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise _ConnectionError(_PROTOCOL_ERROR, "DATA on the connection")
        self._idle_or_known(sid)
        # A check needs no body: every byte is dropped as it comes and acknowledged at once, so
        # neither window ever runs low (the padding counts too, RFC 9113 6.9.1).
        size = len(payload)
        _unpad(flags, payload)
        if size:
            increment = size.to_bytes(4, "big")
            self._write(_frame(_WINDOW_UPDATE, 0, 0, increment))
        stream = self._streams.get(sid)
        if stream is None:
            return  # a stream we answered or reset: its leftovers are ignored (RFC 9113 5.1)
        if stream.ended or stream.request is None:
            self._reset(sid, _STREAM_CLOSED)
            return
        if flags & _END_STREAM:
            stream.ended = True
            self._decide(sid, stream)
        elif size:
            self._write(_frame(_WINDOW_UPDATE, 0, sid, increment))

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise _ConnectionError(_PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _ACK:
            if payload:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
        more_window = False
        for offset in range(0, len(payload), 6):
            key = int.from_bytes(payload[offset : offset + 2], "big")
            value = int.from_bytes(payload[offset + 2 : offset + 6], "big")
            if key == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise _ConnectionError(_FLOW_CONTROL_ERROR, "window too large")
                # RFC 9113 6.9.2: open streams' windows move by the change.
                change, self._initial_window = value - self._initial_window, value
                for stream in self._streams.values():
                    stream.window += change
                    if stream.window > _MAX_WINDOW:
                        raise _ConnectionError(_FLOW_CONTROL_ERROR, "stream window overflow")
                more_window = more_window or change > 0
            elif key == _MAX_FRAME_SIZE:
                if not _MAX_FRAME <= value <= 2**24 - 1:
                    raise _ConnectionError(_PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif key == _ENABLE_PUSH and value > 1:
                raise _ConnectionError(_PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
            # The header table size only bounds an encoder's table; ours never indexes.
        self._write(_SETTINGS_ACK)
        if more_window:
            # Only then can a waiting body move: a SETTINGS frame that changes nothing costs
            # no walk over the waiting bodies.
            self._send_pending()

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = int.from_bytes(payload, "big") & _MAX_WINDOW
        if not sid:
            if not increment:
                raise _ConnectionError(_PROTOCOL_ERROR, "zero WINDOW_UPDATE")
            self._window += increment
            if self._window > _MAX_WINDOW:
                raise _ConnectionError(_FLOW_CONTROL_ERROR, "connection window overflow")
            for waiting in list(self._want_connection_window):
                if self._window <= 0:
                    break
                self._send_body(waiting)
        else:
            self._idle_or_known(sid)
            stream = self._streams.get(sid)
            if stream is None:
                return
            if not increment:
                self._reset(sid, _PROTOCOL_ERROR)
                return
            stream.window += increment
            if stream.window > _MAX_WINDOW:
                self._reset(sid, _FLOW_CONTROL_ERROR)
                return
            self._send_body(sid)

    # -- deciding and answering -----------------------------------------------------
    def _decide(self, sid: int, stream: _Stream) -> None:
        request = stream.request
        assert request is not None
        # A fresh input per check (the core notes its progress on it); the parse is shared.
        check = CheckInput(
            request.method, request.path, request.headers, credential_memo=self._memo
        )
        head = request.method == "HEAD"
        started = time.perf_counter()
        decision = self._server.decide_now(check)
        if decision is not None:
            self._answer(sid, decision, head, started)
            return
        stream.waiting = True
        task = self._loop.create_task(self._decide_later(sid, stream, check, head, started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _decide_later(
        self, sid: int, stream: _Stream, check: CheckInput, head: bool, started: float
    ) -> None:
        try:
            decision = await self._server.decide(check)
        finally:
            # Cancelled too (a key fetch cancelled under it): the stream no longer waits, so its
            # deadline answers it, and a reset one gives its place back.
            stream.waiting = False
            if stream.orphaned:
                self._orphans -= 1
        if self._streams.get(sid) is stream:
            self._answer(sid, decision, head, started)

    def _answer(self, sid: int, decision: Decision, head: bool, started: float) -> None:
        stream = self._streams.get(sid)
        if stream is None or self._transport is None:
            return
        block, body = self._server.reply_h2(decision, head)
        self._write_headers(sid, block, end_stream=not body)
        if body:
            self._pending[sid] = body
            stream.started = self._loop.time()  # the answer gets a deadline of its own to leave
            self._send_body(sid)  # finishes the stream once the body is out whole
        else:
            self._finish(sid, stream)
        metrics = self._server.metrics
        if metrics is not None:
            metrics.observe("http2", decision, time.perf_counter() - started)

    def _write_headers(self, sid: int, block: bytes, end_stream: bool) -> None:
        flags = _END_STREAM if end_stream else 0
        limit = self._peer_max_frame
        if len(block) <= limit:
            self._write(_frame(_HEADERS, flags | _END_HEADERS, sid, block))
            return
        self._write(_frame(_HEADERS, flags, sid, block[:limit]))
        for offset in range(limit, len(block), limit):
            last = offset + limit >= len(block)
            chunk = block[offset : offset + limit]
            self._write(_frame(_CONTINUATION, _END_HEADERS if last else 0, sid, chunk))

    def _send_pending(self) -> None:
        """As much of every waiting body as the windows let through."""
        for sid in list(self._pending):
            self._send_body(sid)

    def _send_body(self, sid: int) -> None:
        """As much of the body waiting on ``sid`` as the windows let through."""
        body = self._pending.get(sid)
        stream = self._streams.get(sid)
        if body is None or stream is None:
            return
        while (size := min(len(body), self._window, stream.window, self._peer_max_frame)) > 0:
            last = size == len(body)
            self._write(_frame(_DATA, _END_STREAM if last else 0, sid, body[:size]))
            self._window -= size
            stream.window -= size
            if last:
                del self._pending[sid]
                self._want_connection_window.pop(sid, None)
                self._finish(sid, stream)
                return
            body = body[size:]
        self._pending[sid] = body
        if stream.window > 0:
            self._want_connection_window[sid] = None
        else:
            self._want_connection_window.pop(sid, None)

    def _finish(self, sid: int, stream: _Stream) -> None:
        """Our answer is whole: the stream is done."""
        if not stream.ended:
            # Answered before the request ended: ask for no more of it (RFC 9113 8.1).
            self._reset(sid, _NO_ERROR)
            return
        self._end_stream(sid)

    def _reset(self, sid: int, code: int) -> None:
        self._write(_frame(_RST_STREAM, 0, sid, code.to_bytes(4, "big")))
        if len(self._reset_by_us) >= 128:
            del self._reset_by_us[next(iter(self._reset_by_us))]
        self._reset_by_us[sid] = None
        self._end_stream(sid)

    def _end_stream(self, sid: int) -> None:
        stream = self._streams.pop(sid, None)
        self._pending.pop(sid, None)
        self._want_connection_window.pop(sid, None)
        if stream is not None and stream.waiting:
            # Still deciding: it keeps its place against MAX_STREAMS until its task ends.
            stream.orphaned = True
            self._orphans += 1
        if not self._streams:
            self._idle_since = self._loop.time()
            if self._peer_gone:
                self._goaway(_NO_ERROR)


def _unpad(flags: int, payload: bytes) -> bytes:
    if not flags & _PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(_PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def _well_formed(fields: list[tuple[str, str]], valid_names: set[str]) -> bool:
    """RFC 9113 8.2-8.3: a request a check can be made of, else a malformed one.

    ``valid_names`` remembers the short names that passed, a bounded number of them; values
    are checked every time.
    """
    seen: set[str] = set()
    regular = False
    for name, value in fields:
        if name not in valid_names:
            if not _FIELD_NAME(name):
                return False
            if len(name) <= 64:  # bounded memory: a hostile name may be 64 KiB long
                if len(valid_names) >= 256:
                    valid_names.clear()
                valid_names.add(name)
        if "\r" in value or "\n" in value or "\x00" in value or value != value.strip(" \t"):
            return False
        if name[0] == ":":
            if regular or name not in _REQUEST_PSEUDO or name in seen:
                return False
            if name == ":path" and not value:
                return False
            seen.add(name)
        else:
            regular = True
            if name in _CONNECTION_HEADERS or (name == "te" and value != "trailers"):
                return False
    # CONNECT (no :scheme or :path) makes no check; nor does a request without a method.
    return ":method" in seen and ":scheme" in seen and ":path" in seen
