"""The HTTP ext_authz server over real sockets: the recorded cases, pipelining, bad input."""

import asyncio
import contextlib
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Mapping

import pytest

from authz.http_check import HEADERS_TO_REMOVE
from authz.http_server import HttpCheckServer
from authz.loader import load_auth_settings
from doma_gateway.authz_process import build_authz
from tests.authz.test_grpc_check import ROUTES
from tests.support.cases import Case, case_ids, load_cases
from tests.support.http import send
from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, jwks

KEY = SigningKey()
CASES = load_cases(KEY)


@contextlib.asynccontextmanager
async def serving(
    tmp_path, keys_delay: float | None = None, **options
) -> AsyncIterator[HttpCheckServer]:
    """The check server on a free port, deciding with KEY: from a JWKS file, or with
    ``keys_delay`` from a JWKS server answering after that delay (a token with an unknown
    ``kid`` then makes its check wait on a fetch)."""
    routes = ROUTES
    keys = None
    if keys_delay is None:
        (tmp_path / "jwks.json").write_bytes(jwks(KEY))
    else:
        keys = JwksServer(jwks(KEY))
        keys.delay = keys_delay
        routes = ROUTES.replace(
            "jwks_file: jwks.json",
            f"jwks_url: {keys.url}\n      jwks_cache: {{refetch_min_interval_seconds: 0}}",
        )
    (tmp_path / "routes.yaml").write_text(routes)
    stack = build_authz(load_auth_settings(tmp_path / "routes.yaml"))
    refresher = asyncio.create_task(stack.keep_keys_fresh())
    await stack.keys_ready.wait()
    check = HttpCheckServer(stack.authorizer, stack.metrics, **options)
    await check.start("127.0.0.1", 0)
    try:
        yield check
    finally:
        await check.shutdown(1)
        refresher.cancel()
        await stack.http.aclose()
        if keys is not None:
            keys.close()


async def fill_until_unread(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` over and over until the server stops reading it for 0.3 s."""
    loop = asyncio.get_running_loop()
    pending, stuck_since = data, loop.time()
    while loop.time() - stuck_since < 0.3:
        try:
            sent = sock.send(pending)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        pending, stuck_since = pending[sent:] or data, loop.time()


@pytest.fixture
async def server(tmp_path):
    async with serving(tmp_path, path_prefix="/check") as check:
        yield check


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_recorded_case(server, case):
    headers = [(name, value) for name, values in case.headers.items() for value in values]
    reply = await asyncio.to_thread(
        send, server.port, "/check" + case.path, headers, method=case.method
    )
    assert_answers(case, reply.status, reply.headers, reply.body)


def assert_answers(case: Case, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """The check listener's answer is the one ``case`` expects, over either protocol."""
    expect = case.expect
    assert status == expect["status"]
    if status == 200:
        for name, value in expect.get("upstream", {}).items():
            assert headers[name].encode("latin-1") == value.encode()
        removed = headers.get(HEADERS_TO_REMOVE, "").split(",")
        for name in expect.get("upstream_absent", []):
            assert name in removed
        assert not set(removed) & set(expect.get("upstream", {}))
    else:
        assert json.loads(body)["reason"] == expect["reason"]


async def raw_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 2):
            chunks.append(chunk)
    except TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)


async def test_pipelined_checks_are_answered_in_order(server):
    token = KEY.token(sub="first")
    data = (
        f"GET /check/api/v1/x HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {token}\r\n\r\n"
        "GET /check/api/v1/x HTTP/1.1\r\nhost: a\r\n\r\n"
        "GET /check/api/v1/scan/health HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
    ).encode()
    answer = await raw_exchange(server.port, data)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"401", b"200"]
    assert b"x-user-id: first" in answer


async def test_a_check_waiting_on_a_key_fetch_keeps_answers_in_order(tmp_path):
    # The key fetch (0.3 s) outlasts the idle timeout: a connection waiting on its answer is
    # not idle.
    async with serving(tmp_path, keys_delay=0.3, idle_seconds=0.1) as check:
        unknown = SigningKey().token()
        data = (
            f"GET /a HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {unknown}\r\n\r\n"
            "GET /api/v1/scan/health HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
        ).encode()
        answer = await raw_exchange(check.port, data)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"401", b"200"]
    assert b"unknown_key" in answer


@pytest.mark.parametrize(
    "data",
    [
        b"GET /x HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\n"
        b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /x HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /x HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        b"CONNECT example.test:443 HTTP/1.1\r\nhost: example.test:443\r\n\r\n",
    ],
    ids=["cl and te", "garbage", "no colon", "upgrade", "connect"],
)
async def test_malformed_requests_get_400_and_the_server_keeps_serving(server, data, caplog):
    answer = await raw_exchange(server.port, data)
    # The refusal is the only answer: an upgrade request is refused before its check is decided.
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    refusal = answer
    assert refusal.startswith(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json")
    assert json.loads(refusal.partition(b"\r\n\r\n")[2]) == {
        "error": "bad_request",
        "reason": "invalid_http_request",
    }
    reply = await asyncio.to_thread(send, server.port, "/check/api/v1/scan/health")
    assert reply.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "data",
    [
        b"GET /x HTTP/1.1\r\nhost: a\r\nx-long: " + b"a" * 70_000 + b"\r\n\r\n",
        # Never finished: the head's size counts before any header or the URL is complete.
        b"GET /x HTTP/1.1\r\nhost: a\r\nx-endless: " + b"a" * 300_000,
        b"GET /" + b"a" * 300_000,
    ],
    ids=["huge header", "endless header", "endless url"],
)
async def test_a_request_head_over_64_kib_is_refused_431(server, data):
    answer = await raw_exchange(server.port, data)
    assert answer.startswith(b"HTTP/1.1 431")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["reason"] == "headers_too_large"
    reply = await asyncio.to_thread(send, server.port, "/check/api/v1/scan/health")
    assert reply.status == 200


@pytest.fixture
async def impatient(tmp_path):
    """A request deadline and an idle timeout of a fraction of a second."""
    async with serving(tmp_path, request_seconds=0.3, idle_seconds=0.5) as check:
        yield check


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    return await asyncio.wait_for(reader.read(), within)


@pytest.mark.parametrize("idle_seconds", [0.5, 60])
async def test_a_request_that_does_not_arrive_whole_in_time_gets_408(tmp_path, idle_seconds):
    async with serving(tmp_path, request_seconds=0.3, idle_seconds=idle_seconds) as check:
        reader, writer = await asyncio.open_connection("127.0.0.1", check.port)
        writer.write(b"GET /api/v1/scan/health HTTP/1.1\r\nhost: a\r\n")
        for _ in range(3):
            # Trickled bytes do not move the deadline.
            await asyncio.sleep(0.1)
            writer.write(b"x-slow: 1\r\n")
        answer = await read_until_closed(reader, 2)
        assert answer.startswith(b"HTTP/1.1 408")
        writer.close()


async def test_an_idle_connection_is_closed_and_a_busy_one_is_not(impatient):
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", impatient.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", impatient.port)
    request = b"GET /api/v1/scan/health HTTP/1.1\r\nhost: a\r\n\r\n"
    for _ in range(4):
        # A request every 0.3 s keeps this one open past the idle timeout.
        writer.write(request)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.3)
    assert await read_until_closed(idle_reader, 2) == b""
    writer.write(request)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    assert await read_until_closed(reader, 2) == b""
    idle_writer.close()
    writer.close()


async def test_an_answer_that_cannot_be_encoded_is_a_503_and_the_server_keeps_serving(
    server, monkeypatch
):
    from authz import http_server

    real = http_server.http_reply

    def failing(decision, *, keep_alive, head=False):
        if decision.allowed:
            raise UnicodeEncodeError("latin-1", "x", 0, 1, "cannot encode")
        return real(decision, keep_alive=keep_alive, head=head)

    monkeypatch.setattr(http_server, "http_reply", failing)
    token = KEY.token(sub="someone-new")
    headers = [("authorization", f"Bearer {token}")]
    reply = await asyncio.to_thread(send, server.port, "/check/api/v1/x", headers)
    assert (reply.status, json.loads(reply.body)["reason"]) == (503, "internal_error")
    denied = await asyncio.to_thread(send, server.port, "/check/api/v1/x")
    assert (denied.status, json.loads(denied.body)["reason"]) == (401, "missing_token")


async def test_trailer_fields_are_never_check_headers_and_count_toward_the_head_cap(server):
    token = KEY.token(sub="trailer")
    head = b"POST /check/api/v1/x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
    smuggled = head + f"3\r\nabc\r\n0\r\nauthorization: Bearer {token}\r\n\r\n".encode()
    answer = await raw_exchange(server.port, smuggled)
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["reason"] == "missing_token"
    # Empty fields are not free: 20,000 of them (80 kB) pass the 64 KiB cap.
    endless = head + b"0\r\n" + b"a:\r\n" * 20_000 + b"\r\n"
    answer = await raw_exchange(server.port, endless)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    reply = await asyncio.to_thread(send, server.port, "/check/api/v1/scan/health")
    assert reply.status == 200


async def test_many_small_pipelined_checks_are_each_held_to_their_own_head(server):
    # 300 checks of about 2 kB in one write: far more than 64 KiB together, each far less.
    one = b"GET /check/api/v1/scan/health HTTP/1.1\r\nhost: a\r\nx-pad: " + b"p" * 2000
    data = (one + b"\r\n\r\n") * 299 + one + b"\r\nconnection: close\r\n\r\n"
    answer = await raw_exchange(server.port, data)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200"] * 300


async def test_a_head_request_gets_the_answer_without_its_body(server):
    data = (
        b"HEAD /check/api/v1/x HTTP/1.1\r\nhost: a\r\n\r\n"
        b"GET /check/api/v1/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
    )
    answer = await raw_exchange(server.port, data)
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 401") and b"content-length: " in first
    # The next answer follows the first head at once: no body in between.
    assert rest.startswith(b"HTTP/1.1 401"), rest[:80]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["reason"] == "missing_token"


async def test_a_client_expecting_100_continue_gets_it_and_then_its_answer(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /check/api/v1/scan/health HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n"
        b"expect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"body")
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert final.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_client_that_never_reads_its_answers_stops_being_read(server):
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = b"GET /check/api/v1/x HTTP/1.1\r\nhost: a\r\n\r\n"  # 401 with a JSON body
    # About 16 MB of checks whose answers are never read.
    for _ in range(40):
        writer.write(request * 10_000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer.drain(), 0.2)
    (connection,) = server._connections
    transport = connection._transport
    assert transport is not None
    # Answers wait in the kernel and a bounded buffer, not in the server's memory.
    assert transport.get_write_buffer_size() < 4 * 1024 * 1024
    writer.transport.abort()


async def test_a_client_that_never_reads_is_let_go_at_the_idle_deadline(tmp_path):
    """Its answers fill every buffer on the way and the server stops reading it; idle, it is
    dropped although its answers never left."""
    async with serving(tmp_path, request_seconds=1.0, idle_seconds=1.0) as check:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", check.port))
        checks = b"GET /api/v1/x HTTP/1.1\r\nhost: a\r\n\r\n" * 4096  # 401s with a body
        try:
            await fill_until_unread(sock, checks)
            assert len(check._connections) == 1
            async with asyncio.timeout(4):  # idle (or 408, then a second's linger)
                while check._connections:  # noqa: ASYNC110 (the server has no event for it)
                    await asyncio.sleep(0.05)
        finally:
            sock.close()
