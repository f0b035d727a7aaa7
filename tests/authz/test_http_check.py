"""The HTTP ext_authz server over real sockets: the recorded cases, pipelining, bad input."""

import asyncio
import json
import re

import pytest

from authz.http_check import HEADERS_TO_REMOVE
from authz.http_server import HttpCheckServer
from authz.loader import load_auth_settings
from doma_gateway.authz_process import build_authz
from tests.authz.test_grpc_check import ROUTES
from tests.support.cases import case_ids, load_cases
from tests.support.http import send
from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, jwks

KEY = SigningKey()
CASES = load_cases(KEY)


@pytest.fixture
async def server(tmp_path):
    (tmp_path / "jwks.json").write_bytes(jwks(KEY))
    (tmp_path / "routes.yaml").write_text(ROUTES)
    stack = build_authz(load_auth_settings(tmp_path / "routes.yaml"))
    keys = asyncio.create_task(stack.keep_keys_fresh())
    await stack.keys_ready.wait()
    check = HttpCheckServer(stack.authorizer, stack.metrics, path_prefix="/check")
    await check.start("127.0.0.1", 0)
    yield check
    await check.shutdown(1)
    keys.cancel()
    await stack.http.aclose()


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
async def test_recorded_case(server, case):
    headers = [(name, value) for name, values in case.headers.items() for value in values]
    reply = await asyncio.to_thread(
        send, server.port, "/check" + case.path, headers, method=case.method
    )
    expect = case.expect
    assert reply.status == expect["status"]
    if reply.status == 200:
        for name, value in expect.get("upstream", {}).items():
            assert reply.headers[name].encode("latin-1") == value.encode()
        removed = reply.headers.get(HEADERS_TO_REMOVE, "").split(",")
        for name in expect.get("upstream_absent", []):
            assert name in removed
        assert not set(removed) & set(expect.get("upstream", {}))
    else:
        assert json.loads(reply.body)["reason"] == expect["reason"]


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
    keys = JwksServer(jwks(KEY))
    keys.delay = 0.3
    (tmp_path / "routes.yaml").write_text(
        ROUTES.replace(
            "jwks_file: jwks.json",
            f"jwks_url: {keys.url}\n      jwks_cache: {{refetch_min_interval_seconds: 0}}",
        )
    )
    stack = build_authz(load_auth_settings(tmp_path / "routes.yaml"))
    refresher = asyncio.create_task(stack.keep_keys_fresh())
    await stack.keys_ready.wait()
    check = HttpCheckServer(stack.authorizer)
    await check.start("127.0.0.1", 0)
    try:
        unknown = SigningKey().token()
        data = (
            f"GET /a HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {unknown}\r\n\r\n"
            "GET /api/v1/scan/health HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
        ).encode()
        answer = await raw_exchange(check.port, data)
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
        assert statuses == [b"401", b"200"]
        assert b"unknown_key" in answer
    finally:
        await check.shutdown(1)
        refresher.cancel()
        await stack.http.aclose()
        keys.close()


@pytest.mark.parametrize(
    "data",
    [
        b"GET /x HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\n"
        b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /x HTTP/1.1\r\nhost: a\r\nx-long: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /x HTTP/1.1\r\nbad header\r\n\r\n",
    ],
    ids=["cl and te", "garbage", "huge header", "no colon"],
)
async def test_malformed_requests_get_400_and_the_server_keeps_serving(server, data):
    answer = await raw_exchange(server.port, data)
    assert answer.startswith(b"HTTP/1.1 400")
    reply = await asyncio.to_thread(send, server.port, "/check/api/v1/scan/health")
    assert reply.status == 200


async def test_an_answer_that_cannot_be_encoded_is_a_503_and_the_server_keeps_serving(
    server, monkeypatch
):
    from authz import http_server

    real = http_server.http_reply

    def failing(decision, *, keep_alive):
        if decision.allowed:
            raise UnicodeEncodeError("latin-1", "x", 0, 1, "cannot encode")
        return real(decision, keep_alive=keep_alive)

    monkeypatch.setattr(http_server, "http_reply", failing)
    token = KEY.token(sub="someone-new")
    headers = [("authorization", f"Bearer {token}")]
    reply = await asyncio.to_thread(send, server.port, "/check/api/v1/x", headers)
    assert (reply.status, json.loads(reply.body)["reason"]) == (503, "internal_error")
    denied = await asyncio.to_thread(send, server.port, "/check/api/v1/x")
    assert (denied.status, json.loads(denied.body)["reason"]) == (401, "missing_token")
