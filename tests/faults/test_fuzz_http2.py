"""Random HTTP/2 frame sequences, fuzzed with Hypothesis against a real HTTP check listener.

After the preface, a client sends frames of every type with random flags, stream ids and
payloads (HPACK blocks well formed or not, padding, priority fields, settings at their bounds),
mixed with well-formed checks, then a PING. Whatever it sent, the listener never logs an error
or lets an exception reach the event loop; each well-formed check is answered or reset unless
the connection ended with a GOAWAY; and the next connection is served as if nothing happened.

The listener runs on its own event loop in a thread, as it would in its process, so that the
client's blocking sockets and Hypothesis's examples do not share its loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.hpack import encode_headers
from authz.http2_check import PREFACE
from tests.authz.test_http_check import KEY, serving

pytestmark = pytest.mark.faults

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x4, 0x8, 0x20
_LAST_PING = b"fuzz-end"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    head = len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big")
    return head + payload


def request_block(path: str = "/api/v1/scan/health", *extra: tuple[str, str]) -> bytes:
    return encode_headers([(":method", "GET"), (":scheme", "http"), (":path", path), *extra])


GOOD = request_block("/api/v1/scan/x", ("authorization", f"Bearer {KEY.token(sub='fuzz')}"))

_NAMES = [":method", ":path", ":scheme", ":authority", ":status", "te", "connection", "cookie"]
_NAMES += ["authorization", "Upper", "x-a", "", "a b", "host"]
fields = st.lists(
    st.tuples(
        st.sampled_from(_NAMES),
        st.sampled_from(["GET", "/", "/api/v1/scan/health", "http", "trailers", " x", "a\rb", ""]),
    ),
    max_size=6,
)
hpack = st.one_of(
    fields.map(encode_headers),
    st.binary(max_size=40),  # undecodable, mostly
    st.just(request_block()),
    # A literal with incremental indexing (the table changes), then a reference to it.
    st.just(b"\x40\x03x-a\x01b\xbe"),
    st.just(b"\x20\x3f\xe1\x1f"),  # two table size updates, nothing else
)


@st.composite
def header_payloads(draw: st.DrawFn) -> tuple[int, bytes]:
    """A HEADERS or CONTINUATION payload, padded or with priority fields, and its flags."""
    flags = draw(st.sampled_from([0, END_STREAM, END_HEADERS, END_STREAM | END_HEADERS]))
    payload = draw(hpack)
    if draw(st.booleans()):
        flags |= PRIORITY_FLAG
        payload = draw(st.binary(min_size=5, max_size=5)) + payload
    if draw(st.booleans()):
        flags |= PADDED
        pad = draw(st.integers(0, 6))
        payload = bytes((draw(st.integers(0, pad + len(payload) + 2)),)) + payload + b"\0" * pad
    return flags, payload


_SETTING_VALUES = st.sampled_from([0, 1, 16_383, 16_384, 65_535, 2**24 - 1, 2**24, 2**31 - 1])
settings_payloads = st.lists(
    st.tuples(st.integers(0, 8), st.one_of(_SETTING_VALUES, st.integers(0, 2**32 - 1))),
    max_size=4,
).map(lambda entries: b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in entries))
streams = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 11, 2**31 - 1])
increments = st.sampled_from([0, 1, 65_535, 2**31 - 1]).map(lambda v: v.to_bytes(4, "big"))
# Payloads by frame type: mostly around the right size, so frames get past the size checks.
payloads = {
    DATA: st.binary(max_size=40),
    PRIORITY: st.binary(min_size=4, max_size=6),
    RST_STREAM: st.binary(min_size=3, max_size=5),
    SETTINGS: settings_payloads | st.binary(max_size=8),
    PING: st.binary(min_size=7, max_size=9),
    GOAWAY: st.binary(min_size=8, max_size=12),
    WINDOW_UPDATE: increments | st.binary(max_size=5),
}


@st.composite
def frames(draw: st.DrawFn) -> tuple[str, int, bytes]:
    """One frame: ("good", stream, bytes) for a well-formed check, else ("any", stream, bytes)."""
    kind = draw(st.integers(0, 11))
    # Connection-level frames belong on stream 0: mostly there, so they get past that check.
    sid = draw(st.sampled_from([0, 0, 0, 1, 3]) if kind in (SETTINGS, PING, GOAWAY) else streams)
    flags = draw(st.integers(0, 255)) if draw(st.booleans()) else 0
    if kind in (HEADERS, CONTINUATION):
        flags, payload = draw(header_payloads())
    elif kind in payloads:
        payload = draw(payloads[kind])
    elif kind == 10:
        return "good", sid, frame(HEADERS, END_STREAM | END_HEADERS, sid, GOOD)
    else:  # an extension frame type, or PUSH_PROMISE
        kind = draw(st.sampled_from([PUSH_PROMISE, 0x0A, 0xFF]))
        payload = draw(st.binary(max_size=20))
    return "any", sid, frame(kind, flags, sid, payload)


@dataclass
class Reply:
    answered: set[int] = field(default_factory=set)  # streams with a HEADERS from the server
    reset: set[int] = field(default_factory=set)
    goaway: bool = False
    pinged: bool = False
    closed: bool = False


def exchange(port: int, data: bytes) -> Reply:
    """Send the preface, ``data`` and a last PING; read until its ACK or the connection ends."""
    reply, buffer = Reply(), b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0) + data + frame(PING, 0, 0, _LAST_PING))
        while not reply.pinged:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                reply.closed = True
                break
            buffer += chunk
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                length, kind, flags = int.from_bytes(buffer[:3], "big"), buffer[3], buffer[4]
                sid = int.from_bytes(buffer[5:9], "big") & 0x7FFF_FFFF
                payload, buffer = buffer[9 : 9 + length], buffer[9 + length :]
                if kind == HEADERS:
                    reply.answered.add(sid)
                elif kind == RST_STREAM:
                    reply.reset.add(sid)
                elif kind == GOAWAY:
                    reply.goaway = True
                elif kind == PING and flags & 0x1 and payload == _LAST_PING:
                    reply.pinged = True
    return reply


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@dataclass
class Listener:
    port: int
    errors: list[str]


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    directory: Path = tmp_path_factory.mktemp("h2fuzz")
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    ready = threading.Event()
    found: dict[str, object] = {}

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: errors.records.append(str(context)))
        stopping = asyncio.Event()
        async with serving(directory, request_seconds=2.0) as check:
            found.update(port=check.port, stop=lambda: loop.call_soon_threadsafe(stopping.set))
            ready.set()
            await stopping.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield Listener(cast(int, found["port"]), errors.records)
    finally:
        cast(Callable[[], None], found["stop"])()
        thread.join(10)
        logging.getLogger().removeHandler(errors)
    assert not errors.records, errors.records[:3]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), max_size=12))
def test_random_frames_never_break_the_http2_listener(listener: Listener, sent):
    reply = exchange(listener.port, b"".join(data for _, _, data in sent))
    try:
        assert not listener.errors, listener.errors[:3]
    finally:
        listener.errors.clear()  # each example's own: Hypothesis shrinks to the one at fault
    assert reply.pinged or reply.goaway, reply  # alive, or it said why it is not
    if not reply.goaway:
        # Every well-formed check is answered or reset, unless the client reset it itself.
        good = {sid for kind, sid, _ in sent if kind == "good"}
        ours = {sid for kind, sid, data in sent if kind == "any" and data[3] == RST_STREAM}
        assert good - ours <= reply.answered | reply.reset, (reply, good)
    fresh = exchange(listener.port, frame(HEADERS, END_STREAM | END_HEADERS, 1, GOOD))
    assert fresh.answered == {1} and not fresh.goaway, fresh
