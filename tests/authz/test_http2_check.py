"""The HTTP check listener over HTTP/2 with prior knowledge, against the h2 library as client.

The same port serves HTTP/1.1 (tests/authz/test_http_check.py); here: the recorded cases decided
alike, many checks at once on one connection, and a hostile client's frames.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time
import tracemalloc
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from authz.check import CheckInput, Decision
from authz.hpack import encode_headers
from authz.http2_check import MAX_STREAMS, PREFACE
from authz.http_server import HttpCheckServer
from tests.authz.test_http_check import CASES, KEY, assert_answers, fill_until_unread, serving
from tests.support.cases import case_ids
from tests.support.tokens import SigningKey

PROTOCOL_ERROR, FLOW_CONTROL_ERROR, REFUSED_STREAM, CANCEL = 0x1, 0x3, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB


@dataclass
class Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reset: int | None = None
    order: int = 0

    def json(self) -> dict[str, object]:
        return json.loads(self.body)


class Client:
    """An h2 client connection over asyncio streams; answers gathered per stream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: dict[int, int] | None = None,
    ):
        self.reader, self.writer = reader, writer
        config = h2.config.H2Configuration(client_side=True, header_encoding="latin-1")
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.replies: dict[int, Reply] = {}
        self.goaway: int | None = None
        self.closed = False
        self._answered = 0
        self.flush()

    @classmethod
    async def open(cls, port: int, settings: dict[int, int] | None = None) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, settings)

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    def request(
        self,
        path: str,
        headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
        method: str = "GET",
        end: bool = True,
    ) -> int:
        stream = self.h2.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", "a"), (":path", path)]
        self.h2.send_headers(stream, [*fields, *headers], end_stream=end)
        self.replies[stream] = Reply()
        return stream

    async def wait(self, streams: list[int], seconds: float = 5.0) -> dict[int, Reply]:
        """Read until every stream in ``streams`` ended or was reset, or the connection closed."""
        self.flush()

        def done() -> bool:
            return all(self.replies[s].order or self.replies[s].reset is not None for s in streams)

        async with asyncio.timeout(seconds):
            while not done() and not self.closed:
                data = await self.reader.read(65536)
                if not data:
                    self.closed = True
                    break
                self.feed(data)
        return {s: self.replies[s] for s in streams}

    def feed(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                reply = self.replies[event.stream_id]
                reply.headers = dict(event.headers)
                reply.status = int(reply.headers[":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.replies[event.stream_id].body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._answered += 1
                self.replies[event.stream_id].order = self._answered
            elif isinstance(event, h2.events.StreamReset):
                self.replies[event.stream_id].reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event.error_code
        self.flush()

    async def closed_by_server(self, seconds: float = 5.0) -> bool:
        async with asyncio.timeout(seconds):
            while data := await self.reader.read(65536):
                self.feed(data)
        return True

    def close(self) -> None:
        self.writer.close()


async def raw(port: int, frames: list[bytes], read_for: float = 1.0) -> list[object]:
    """Frames written by hand after the preface; the server's frames until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PREFACE + SettingsFrame(0).serialize() + b"".join(frames))
    data = b""
    try:
        async with asyncio.timeout(read_for):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        pass
    writer.close()
    return _frames(data)


def _frames(data: bytes) -> list[object]:
    from hyperframe.frame import Frame

    frames: list[object] = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """A frame as bytes, however wrong: hyperframe refuses to build the broken ones."""
    head = len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big")
    return head + payload


def block(path: str = "/api/v1/scan/health", *extra: tuple[str, str], method: str = "GET") -> bytes:
    fields = [(":method", method), (":scheme", "http"), (":path", path), *extra]
    return encode_headers(fields)


def header_frames(stream: int, fields: bytes, ends: bool) -> list[bytes]:
    """A header block of any size as HEADERS and as many CONTINUATION frames as it takes."""
    size = 16_384
    pieces = [fields[offset : offset + size] for offset in range(0, len(fields), size)] or [b""]
    frames = []
    for index, piece in enumerate(pieces):
        flags = ["END_HEADERS"] if index == len(pieces) - 1 else []
        if index:
            frames.append(ContinuationFrame(stream, piece, flags=flags).serialize())
        else:
            flags += ["END_STREAM"] if ends else []
            frames.append(HeadersFrame(stream, piece, flags=flags).serialize())
    return frames


@pytest.fixture
async def server(tmp_path):
    async with serving(tmp_path, path_prefix="/check") as check:
        yield check


@pytest.fixture
async def loop_errors() -> list[dict[str, object]]:
    """What the event loop would log as errors: an exception out of a protocol callback, a task
    whose exception nobody retrieved."""
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    return errors


@pytest.fixture
async def client(server):
    connection = await Client.open(server.port)
    yield connection
    connection.close()


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_recorded_case(client, case):
    headers = [(name, value) for name, values in case.headers.items() for value in values]
    stream = client.request("/check" + case.path, headers, method=case.method)
    reply = (await client.wait([stream]))[stream]
    assert_answers(case, reply.status, reply.headers, reply.body)
    assert int(reply.headers.get("content-length", 0)) == len(reply.body)


async def test_many_checks_at_once_on_one_connection_each_get_their_own_answer(client):
    tokens = {f"user-{i}": KEY.token(sub=f"user-{i}") for i in range(40)}
    streams = {
        client.request("/check/api/v1/scan/x", [("authorization", f"Bearer {token}")]): sub
        for sub, token in tokens.items()
    }
    denied = [client.request("/check/api/v1/scan/x") for _ in range(10)]
    replies = await client.wait([*streams, *denied])
    assert {replies[s].headers.get("x-user-id") for s in streams} == set(tokens)
    for stream, sub in streams.items():
        assert replies[stream].status == 200 and replies[stream].headers["x-user-id"] == sub
    assert {replies[s].status for s in denied} == {401}
    assert client.goaway is None


async def test_a_check_waiting_on_a_key_fetch_does_not_hold_back_the_others(tmp_path):
    async with serving(tmp_path, keys_delay=0.3, idle_seconds=0.1) as check:
        client = await Client.open(check.port)
        try:
            waiting = client.request("/a", [("authorization", f"Bearer {SigningKey().token()}")])
            quick = client.request("/api/v1/scan/health")
            replies = await client.wait([waiting, quick])
            assert replies[quick].status == 200 and replies[quick].order == 1
            assert replies[waiting].status == 401
            assert replies[waiting].json()["reason"] == "unknown_key"
            # Waiting on the fetch (0.3 s) is not idleness (0.1 s): the connection stayed open.
            assert client.goaway is None
        finally:
            client.close()


async def test_a_check_with_a_body_and_trailers_is_decided_when_the_request_ends(client):
    stream = client.request("/check/api/v1/scan/health", method="POST", end=False)
    # Three times the initial window: the body is dropped and its bytes acknowledged as they
    # come, so the client is never stuck waiting for window.
    left = 3 * 65_535
    async with asyncio.timeout(5):
        while left:
            size = min(left, client.h2.local_flow_control_window(stream), 16_384)
            if not size:
                client.flush()
                client.feed(await client.reader.read(65536))
                continue
            client.h2.send_data(stream, b"x" * size)
            left -= size
    client.h2.send_headers(stream, [("x-trailer", "1")], end_stream=True)
    reply = (await client.wait([stream]))[stream]
    assert reply.status == 200 and reply.order == 1


async def test_a_head_check_gets_the_head_only(client):
    stream = client.request("/check/api/v1/scan/x", method="HEAD")
    reply = (await client.wait([stream]))[stream]
    assert reply.status == 401 and reply.body == b""
    assert int(reply.headers["content-length"]) > 0


async def test_a_denial_body_waits_for_flow_control_window(server):
    # The client lets us send 8 bytes per stream: the JSON body goes out as its window opens.
    client = await Client.open(server.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 8})
    try:
        stream = client.request("/check/api/v1/scan/x")
        reply = (await client.wait([stream]))[stream]
        assert reply.status == 401 and reply.json()["reason"] == "missing_token"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ([(":method", "GET"), (":scheme", "http"), (":path", "/a"), ("X-Upper", "1")], "upper"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/a"), ("connection", "x")], "conn"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/a"), ("te", "gzip")], "te"),
        ([(":method", "GET"), (":scheme", "http"), ("a", "1"), (":path", "/a")], "order"),
        ([(":method", "GET"), (":scheme", "http")], "no path"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "")], "empty path"),
        ([(":method", "CONNECT"), (":authority", "a:443")], "connect"),
        ([(":method", "GET"), (":method", "GET"), (":scheme", "http"), (":path", "/a")], "twice"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/a"), (":status", "200")], "status"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/a"), ("a", "b\r\nc: d")], "crlf"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/a"), ("a b", "1")], "space"),
        ([(":method", "GET"), (":scheme", "http"), (":path", "/a"), ("a", " padded")], "ows"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_a_malformed_request_is_reset_and_the_connection_goes_on(server, fields, why):
    before = server.metrics.snapshot() if server.metrics else None
    frames = [
        HeadersFrame(1, encode_headers(fields), flags=["END_HEADERS", "END_STREAM"]).serialize(),
        HeadersFrame(3, block(), flags=["END_HEADERS", "END_STREAM"]).serialize(),
    ]
    got = await raw(server.port, frames)
    resets = [f for f in got if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(1, PROTOCOL_ERROR)], why
    answered = [f for f in got if isinstance(f, HeadersFrame)]
    assert [f.stream_id for f in answered] == [3]
    assert not [f for f in got if isinstance(f, GoAwayFrame)]
    if before is not None:
        assert server.metrics.snapshot() != before  # stream 3 only was decided


async def test_a_header_list_over_64_kib_gets_431_and_the_table_stays_in_step(client):
    big = [(f"x-filler-{i}", "v" * 1000) for i in range(70)]
    # h2 indexes these fields: the next request refers to the table the 431 request filled.
    refused = client.request("/check/api/v1/scan/health", big)
    replies = await client.wait([refused])
    assert replies[refused].status == 431
    assert replies[refused].json()["reason"] == "headers_too_large"
    after = client.request("/check/api/v1/scan/health", big[:5])
    assert (await client.wait([after]))[after].status == 200


async def test_a_header_block_over_128_kib_ends_the_connection(server):
    fields = encode_headers([("x-a", "v" * 16_000)])
    frames = [HeadersFrame(1, block()[:0] + fields, flags=[]).serialize()]
    frames += [ContinuationFrame(1, fields).serialize() for _ in range(9)]
    got = await raw(server.port, frames)
    goaway = [f for f in got if isinstance(f, GoAwayFrame)]
    assert [f.error_code for f in goaway] == [ENHANCE_YOUR_CALM]


async def test_an_undecodable_block_ends_the_connection_with_compression_error(server):
    got = await raw(server.port, [HeadersFrame(1, b"\x80", flags=["END_HEADERS"]).serialize()])
    assert [f.error_code for f in got if isinstance(f, GoAwayFrame)] == [COMPRESSION_ERROR]


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(1, b"x").serialize(),  # DATA on an idle stream
        ContinuationFrame(1, b"").serialize(),  # CONTINUATION with no block open
        HeadersFrame(2, block(), flags=["END_HEADERS"]).serialize(),  # an even stream id
        frame(1, 0x4, 0, block()),  # HEADERS on stream 0
        frame(5, 0x4, 1, b"\x00\x00\x00\x03" + block()),  # PUSH_PROMISE from a client
        frame(8, 0, 0, b"\x00\x00\x00\x00"),  # a zero WINDOW_UPDATE
        frame(6, 0, 0, b"12345"),  # PING of 5 bytes
        frame(0, 0, 1, b"\x00" * 0x4001),  # a frame over 16 KiB
        frame(7, 0, 0, b"\x00\x00\x00\x00"),  # a GOAWAY of 4 bytes
        HeadersFrame(5, block(), flags=["END_HEADERS", "END_STREAM"]).serialize()
        + frame(3, 0, 2, b"\x00\x00\x00\x08"),  # RST_STREAM on an even stream
    ],
    ids=[
        "data-idle",
        "continuation",
        "even",
        "stream0",
        "push",
        "zero-window",
        "short-ping",
        "oversize",
        "short-goaway",
        "even-reset",
    ],
)
async def test_a_connection_error_gets_a_goaway_and_the_connection_closes(server, frame):
    got = await raw(server.port, [frame], read_for=3)
    goaway = [f for f in got if isinstance(f, GoAwayFrame)]
    assert len(goaway) == 1 and goaway[0].error_code != 0


async def test_a_header_block_interrupted_by_another_frame_ends_the_connection(server):
    frames = [
        HeadersFrame(1, block(), flags=[]).serialize(),
        DataFrame(1, b"x").serialize(),
    ]
    got = await raw(server.port, frames)
    assert [f.error_code for f in got if isinstance(f, GoAwayFrame)] == [PROTOCOL_ERROR]


async def test_a_bad_preface_is_refused(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PREFACE[:18] + b"XX\r\n\r\n")
    data = await asyncio.wait_for(reader.read(65536), 2)
    writer.close()
    goaway = [f for f in _frames(data) if isinstance(f, GoAwayFrame)]
    assert [f.error_code for f in goaway] == [PROTOCOL_ERROR]


async def test_half_a_preface_gets_the_request_deadline_not_the_idle_one(tmp_path):
    async with serving(tmp_path, request_seconds=0.3, idle_seconds=30) as check:
        reader, writer = await asyncio.open_connection("127.0.0.1", check.port)
        writer.write(PREFACE[:16])
        async with asyncio.timeout(3):
            while await reader.read(65536):
                pass
        writer.close()


async def test_a_preface_split_over_many_writes_is_still_http2(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for byte in PREFACE:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.001)
    writer.write(SettingsFrame(0).serialize())
    writer.write(HeadersFrame(1, block(), flags=["END_HEADERS", "END_STREAM"]).serialize())
    data = b""
    async with asyncio.timeout(3):
        while not any(isinstance(f, HeadersFrame) for f in _frames(data)):
            data += await reader.read(65536)
    writer.close()
    headers = [f for f in _frames(data) if isinstance(f, HeadersFrame)]
    assert [f.stream_id for f in headers] == [1]


async def test_frames_sent_a_byte_at_a_time_are_read_whole(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PREFACE + SettingsFrame(0).serialize())
    token = ("authorization", f"Bearer {KEY.token(sub='slow-sender')}")
    request = HeadersFrame(1, block("/check/api/v1/scan/x", token), flags=["END_HEADERS"])
    data = request.serialize() + DataFrame(1, b"x" * 3000, flags=["END_STREAM"]).serialize()
    for offset in range(len(data)):
        writer.write(data[offset : offset + 1])
        if offset % 64 == 0:
            await writer.drain()
    answer = b""
    async with asyncio.timeout(5):
        while not any(isinstance(f, HeadersFrame) for f in _frames(answer)):
            answer += await reader.read(65536)
    writer.close()
    (headers,) = [f for f in _frames(answer) if isinstance(f, HeadersFrame)]
    assert headers.stream_id == 1 and b"slow-sender" in headers.data


async def test_reset_streams_waiting_on_a_key_fetch_count_against_the_stream_limit(tmp_path):
    async with serving(tmp_path, keys_delay=1.5) as check:
        unknown = ("authorization", f"Bearer {SigningKey().token()}")
        frames = []
        for sid in range(1, 2 * (MAX_STREAMS + 40), 2):
            frames.append(
                HeadersFrame(
                    sid, block("/a", unknown), flags=["END_HEADERS", "END_STREAM"]
                ).serialize()
            )
            frames.append(RstStreamFrame(sid, error_code=8).serialize())
        got = await raw(check.port, frames, read_for=0.5)
    refused = [f for f in got if isinstance(f, RstStreamFrame)]
    # Each reset stream keeps its place while its fetch runs: past the limit, refused.
    assert len(refused) >= 40
    assert {f.error_code for f in refused} == {REFUSED_STREAM}


async def test_a_stream_depending_on_itself_is_reset(server):
    frames = [
        HeadersFrame(1, block(), flags=["END_HEADERS"]).serialize(),
        frame(2, 0, 1, b"\x00\x00\x00\x01\x10"),  # PRIORITY: stream 1 depends on stream 1
        HeadersFrame(3, block(), flags=["END_HEADERS", "END_STREAM"]).serialize(),
    ]
    got = await raw(server.port, frames)
    resets = [(f.stream_id, f.error_code) for f in got if isinstance(f, RstStreamFrame)]
    assert resets == [(1, PROTOCOL_ERROR)]
    assert [f.stream_id for f in got if isinstance(f, HeadersFrame)] == [3]


async def test_trailers_on_a_stream_answered_early_are_ignored_and_keep_the_table(tmp_path):
    # Stream 1 gets its 408 and our RST_STREAM before its trailers come: those are decoded for
    # the table's sake (they index a field), not taken as a protocol error, and stream 3 refers
    # to the field they indexed.
    indexed = b"\x40\x05x-new\x01v"  # literal with incremental indexing: table index 62
    async with serving(tmp_path, request_seconds=0.2) as check:
        reader, writer = await asyncio.open_connection("127.0.0.1", check.port)
        writer.write(PREFACE + SettingsFrame(0).serialize())
        writer.write(HeadersFrame(1, block(), flags=["END_HEADERS"]).serialize())
        data = b""
        async with asyncio.timeout(3):
            while not any(isinstance(f, RstStreamFrame) for f in _frames(data)):
                data += await reader.read(65536)
        writer.write(HeadersFrame(1, indexed, flags=["END_HEADERS", "END_STREAM"]).serialize())
        writer.write(
            HeadersFrame(3, block() + b"\xbe", flags=["END_HEADERS", "END_STREAM"]).serialize()
        )
        async with asyncio.timeout(3):
            while not any(
                isinstance(f, HeadersFrame) and f.stream_id == 3 for f in _frames(data)
            ) and not any(isinstance(f, GoAwayFrame) for f in _frames(data)):
                data += await reader.read(65536)
        writer.close()
    got = _frames(data)
    assert not [f for f in got if isinstance(f, GoAwayFrame)]
    answers = {f.stream_id: f.data for f in got if isinstance(f, HeadersFrame)}
    assert answers[3][:1] == b"\x88"  # :status 200


async def test_a_stream_that_never_ends_gets_408(tmp_path):
    async with serving(tmp_path, request_seconds=0.3) as check:
        client = await Client.open(check.port)
        try:
            stream = client.request("/api/v1/scan/health", end=False)
            reply = (await client.wait([stream]))[stream]
            assert reply.status == 408 and reply.json()["reason"] == "request_timeout"
        finally:
            client.close()


async def test_an_unfinished_header_block_ends_the_connection_after_the_request_deadline(
    tmp_path,
):
    async with serving(tmp_path, request_seconds=0.3) as check:
        got = await raw(check.port, [HeadersFrame(1, block(), flags=[]).serialize()], 2)
    assert [f.error_code for f in got if isinstance(f, GoAwayFrame)] == [PROTOCOL_ERROR]


async def test_an_idle_connection_gets_a_goaway_and_closes(tmp_path):
    async with serving(tmp_path, idle_seconds=1.0) as check:
        client = await Client.open(check.port)
        stream = client.request("/api/v1/scan/health")
        await client.wait([stream])
        assert await client.closed_by_server(3)
        assert client.goaway == 0
        client.close()


async def test_shutdown_says_goaway(tmp_path):
    async with serving(tmp_path) as check:
        client = await Client.open(check.port)
        stream = client.request("/api/v1/scan/health")
        await client.wait([stream])
        await check.shutdown(1)
        assert await client.closed_by_server(3)
        assert client.goaway == 0
        client.close()


async def test_ping_and_settings_are_acknowledged(client):
    client.h2.ping(b"12345678")
    stream = client.request("/check/api/v1/scan/health")
    events: list[object] = []
    client.flush()
    async with asyncio.timeout(3):
        while not any(isinstance(e, h2.events.PingAckReceived) for e in events):
            events += client.h2.receive_data(await client.reader.read(65536))
            client.flush()
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in events)
    assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == stream for e in events)


async def test_the_port_still_speaks_http1(server):
    from tests.support.http import send

    reply = await asyncio.to_thread(send, server.port, "/check/api/v1/scan/health")
    assert reply.status == 200


async def test_frames_after_the_clients_goaway_are_dropped_quietly(server, loop_errors):
    frames = [
        HeadersFrame(1, block("/check/api/v1/scan/health"), flags=["END_HEADERS", "END_STREAM"]),
        GoAwayFrame(0),
        HeadersFrame(3, block("/check/api/v1/scan/health"), flags=["END_HEADERS", "END_STREAM"]),
        PingFrame(0, b"12345678"),
    ]
    got = await raw(server.port, [f.serialize() for f in frames])
    assert [f.stream_id for f in got if isinstance(f, HeadersFrame)] == [1]
    assert [f.error_code for f in got if isinstance(f, GoAwayFrame)] == [0]
    assert not loop_errors


@pytest.mark.parametrize("end", ["shutdown", "connection-error"])
async def test_a_check_that_ends_after_the_goaway_is_dropped_quietly(tmp_path, loop_errors, end):
    async with serving(tmp_path, keys_delay=0.5) as check:
        unknown = ("authorization", f"Bearer {SigningKey().token()}")
        waiting = HeadersFrame(1, block("/a", unknown), flags=["END_HEADERS", "END_STREAM"])
        reader, writer = await asyncio.open_connection("127.0.0.1", check.port)
        writer.write(PREFACE + SettingsFrame(0).serialize() + waiting.serialize())
        await asyncio.sleep(0.1)
        if end == "shutdown":
            await check.shutdown(0.1)  # shorter than the fetch
        else:
            writer.write(frame(6, 0, 0, b"12345"))  # a PING of 5 bytes
        data = b""
        async with asyncio.timeout(3):
            while chunk := await reader.read(65536):  # until the server closes
                data += chunk
        await asyncio.sleep(0.6)  # the fetch ends, and its check with it
        writer.close()
    got = _frames(data)
    gc.collect()  # a task's unretrieved exception is reported when the task is collected
    assert [type(f) for f in got if isinstance(f, GoAwayFrame | HeadersFrame)] == [GoAwayFrame]
    assert not loop_errors


@pytest.mark.parametrize("ends", [False, True], ids=["open", "ended"])
async def test_an_early_answer_resets_a_request_still_open_once_and_an_ended_one_never(
    server, ends
):
    big = block("/check/api/v1/scan/health", *[(f"x-f{i}", "v" * 1000) for i in range(70)])
    got = await raw(server.port, header_frames(1, big, ends))
    assert [f.stream_id for f in got if isinstance(f, HeadersFrame)] == [1]  # the 431
    resets = [f.error_code for f in got if isinstance(f, RstStreamFrame)]
    assert resets == ([] if ends else [0])


async def test_an_answer_the_client_never_opens_a_window_for_gives_up_its_stream(tmp_path):
    async with serving(tmp_path, request_seconds=0.3, idle_seconds=0.6) as check:
        reader, writer = await asyncio.open_connection("127.0.0.1", check.port)
        no_window = SettingsFrame(0, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        denied = HeadersFrame(1, block("/a"), flags=["END_HEADERS", "END_STREAM"])
        writer.write(PREFACE + no_window.serialize() + denied.serialize())
        data = b""
        async with asyncio.timeout(3):  # the stream is reset, then the idle connection closed
            while chunk := await reader.read(65536):
                data += chunk
        writer.close()
    got = _frames(data)
    assert [f.stream_id for f in got if isinstance(f, HeadersFrame)] == [1]  # the 401's head
    assert [(f.stream_id, f.error_code) for f in got if isinstance(f, RstStreamFrame)] == [
        (1, CANCEL)
    ]
    assert [f.error_code for f in got if isinstance(f, GoAwayFrame)] == [0]


@pytest.mark.parametrize(
    "request_block",
    [
        # a 60 KB header value
        lambda i: block("/check/api/v1/scan/health", ("x-big", f"{i:04}" + "a" * 60_000)),
        # a 60 KB header name, valid and never seen before
        lambda i: block("/check/api/v1/scan/health", (f"x-{i:04}" + "a" * 60_000, "")),
    ],
    ids=["long-value", "long-name"],
)
async def test_what_a_connection_remembers_of_its_requests_stays_small(server, request_block):
    """Forty requests of 60 KB each: once decided, their blocks and names are not kept."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PREFACE + SettingsFrame(0).serialize())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(40):
            writer.write(b"".join(header_frames(2 * i + 1, request_block(i), ends=True)))
            await writer.drain()
        await asyncio.sleep(0.3)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        writer.close()
    assert held < 1024 * 1024


@pytest.mark.parametrize(
    "trailer", [(":path", "/api/v1/scan/health"), ("X-Upper", "1")], ids=["pseudo", "upper"]
)
async def test_malformed_trailers_reset_their_stream_and_the_connection_goes_on(server, trailer):
    frames = [
        HeadersFrame(1, block("/check/api/v1/scan/health"), flags=["END_HEADERS"]),
        HeadersFrame(1, encode_headers([trailer]), flags=["END_HEADERS", "END_STREAM"]),
        HeadersFrame(3, block("/check/api/v1/scan/health"), flags=["END_HEADERS", "END_STREAM"]),
    ]
    got = await raw(server.port, [f.serialize() for f in frames])
    resets = [(f.stream_id, f.error_code) for f in got if isinstance(f, RstStreamFrame)]
    assert resets == [(1, PROTOCOL_ERROR)]
    assert [f.stream_id for f in got if isinstance(f, HeadersFrame)] == [3]
    assert not [f for f in got if isinstance(f, GoAwayFrame)]


async def _cpu_per_megabyte(port: int, flood: bytes) -> float:
    """CPU seconds per MB of ``flood`` (frames repeated), read and answered by the server while
    255 denials wait for stream window that the client never gives."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    no_window = SettingsFrame(0, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    denied = [
        HeadersFrame(sid, block("/a"), flags=["END_HEADERS", "END_STREAM"]).serialize()
        for sid in range(1, 2 * 255, 2)
    ]
    writer.write(PREFACE + no_window.serialize() + b"".join(denied))

    async def read_all() -> None:
        while await reader.read(1 << 20):
            pass

    reading = asyncio.create_task(read_all())
    await asyncio.sleep(0.2)
    data = flood * (600_000 // len(flood))
    started = time.process_time()
    writer.write(data + PingFrame(0, b"the-end!").serialize())
    await writer.drain()
    await asyncio.sleep(0.3)
    spent = time.process_time() - started
    reading.cancel()
    writer.close()
    return spent / (len(data) / 1e6)


@pytest.mark.parametrize(
    "flood",
    [
        SettingsFrame(0).serialize(),
        WindowUpdateFrame(0, window_increment=1).serialize(),
    ],
    ids=["empty-settings", "connection-window"],
)
async def test_frames_that_open_no_window_cost_no_more_than_pings(server, flood):
    """A body waiting for window is not looked at again for each frame that cannot move it."""
    ping = await _cpu_per_megabyte(server.port, PingFrame(0, b"12345678").serialize())
    other = await _cpu_per_megabyte(server.port, flood)
    assert other < 4 * ping + 0.2, (other, ping)


async def test_a_new_initial_window_that_overflows_a_streams_window_ends_the_connection(server):
    """RFC 9113 6.9.2: the change moves every open stream's window, past 2**31 - 1 an error."""
    frames = [
        HeadersFrame(1, block("/check/api/v1/scan/health"), flags=["END_HEADERS"]),
        WindowUpdateFrame(1, window_increment=2**31 - 1 - 65_535),  # now at the maximum
        SettingsFrame(0, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65_536}),
    ]
    got = await raw(server.port, [f.serialize() for f in frames])
    assert [f.error_code for f in got if isinstance(f, GoAwayFrame)] == [FLOW_CONTROL_ERROR]


async def test_a_client_that_never_reads_is_let_go(tmp_path):
    """PINGs until our acknowledgements fill every buffer on the way: idle, then GOAWAY, then
    the connection is dropped although the GOAWAY never left."""
    async with serving(tmp_path, idle_seconds=1.0) as check:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", check.port))
        pings = PingFrame(0, b"12345678").serialize() * 4096
        sock.send(PREFACE + SettingsFrame(0).serialize())
        try:
            await fill_until_unread(sock, pings)
            assert len(check._connections) == 1
            async with asyncio.timeout(4):  # idle, then a second's linger
                while check._connections:  # noqa: ASYNC110 (the server has no event for it)
                    await asyncio.sleep(0.05)
        finally:
            sock.close()


class _CancelledDecider:
    """Every check waits on I/O, and that wait is cancelled under it."""

    def decide_now(self, request: CheckInput) -> Decision | None:
        return None

    async def decide(self, request: CheckInput) -> Decision:
        await asyncio.sleep(0.05)
        raise asyncio.CancelledError


async def test_a_check_cancelled_under_its_stream_still_gets_an_answer_and_its_place_back():
    check = HttpCheckServer(_CancelledDecider(), request_seconds=0.3)
    await check.start("127.0.0.1", 0)
    try:
        frames = [
            HeadersFrame(1, block("/a"), flags=["END_HEADERS", "END_STREAM"]).serialize(),
            HeadersFrame(3, block("/a"), flags=["END_HEADERS", "END_STREAM"]).serialize(),
            RstStreamFrame(3, error_code=CANCEL).serialize(),  # reset while its check waits
        ]
        got = await raw(check.port, frames, read_for=1.5)
        (connection,) = check._connections
        assert connection._orphans == 0
    finally:
        await check.shutdown(1)
    answers = [f for f in got if isinstance(f, HeadersFrame)]
    assert [f.stream_id for f in answers] == [1]  # its 408, at the deadline
