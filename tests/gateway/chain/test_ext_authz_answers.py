"""Crafted ext-authz answers from a scripted gRPC server, applied the way Envoy applies them:
header actions, removals, query parameters, response headers, denials with any body, errors and
timeouts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import wrappers_pb2
from google.rpc import code_pb2, status_pb2
from prometheus_client import CollectorRegistry

from gateway.policies.auth import ExtAuthzSettings
from gateway.policies.client_ip import ClientAddress
from gateway.policies.ext_authz import ExtAuthzClient, ExtAuthzPolicy
from gateway.policies.metrics import PolicyMetrics
from tests.gateway.chain.conftest import ext_authz_routes, get, raw_request
from tests.support.upstreams import ScriptedUpstream


class Scripted(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.answer = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
        self.delay = 0.0
        self.seen: list[external_auth_pb2.CheckRequest] = []

    async def Check(self, request: Any, context: Any) -> external_auth_pb2.CheckResponse:
        self.seen.append(request)
        await asyncio.sleep(self.delay)
        return self.answer


@pytest.fixture
async def server() -> AsyncIterator[tuple[Scripted, str]]:
    scripted = Scripted()
    grpc_server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(scripted, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    yield scripted, f"127.0.0.1:{port}"
    await grpc_server.stop(0)


async def call(
    target: str, headers: list[tuple[bytes, bytes]], *, query: bytes = b"", **settings: Any
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        seen["headers"] = list(scope["headers"])
        seen["query"] = scope["query_string"]
        seen["claims"] = scope.get("doma.claims")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-up", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = ExtAuthzSettings(grpc_service=target, **settings)
    client = ExtAuthzClient(config)
    policy = ExtAuthzPolicy(
        upstream,
        settings=config,
        client=client,
        metrics=PolicyMetrics(CollectorRegistry()),
        client_address=ClientAddress(()),
    )
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "path": "/api/v1/x", "raw_path": b"/api/v1/x",
        "query_string": query, "headers": headers, "client": ("10.0.0.1", 1), "scheme": "http",
        "doma.request_id": "rid-1",
    }  # fmt: skip
    try:
        await policy(scope, None, send)  # type: ignore[arg-type]
    finally:
        await client.aclose()
    seen["status"] = sent[0]["status"]
    seen["response_headers"] = sent[0]["headers"]
    seen["body"] = sent[1]["body"]
    return seen


def option(key: str, value: str, action: int | None = None, append: bool | None = None) -> Any:
    made = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))
    if action is not None:
        made.append_action = action
    if append is not None:
        made.append.CopyFrom(wrappers_pb2.BoolValue(value=append))
    return made


async def test_an_ok_answer_mutates_request_and_response_headers(server: tuple[Scripted, str]):
    scripted, target = server
    Option = base_pb2.HeaderValueOption
    ok = external_auth_pb2.OkHttpResponse(
        headers=[
            option("x-user-id", "u-1", Option.OVERWRITE_IF_EXISTS_OR_ADD),
            option("x-tag", "second"),
            option("x-only-if", "no", Option.OVERWRITE_IF_EXISTS),
        ],
        headers_to_remove=["cookie", "host"],
        response_headers_to_add=[option("x-authz", "yes", Option.OVERWRITE_IF_EXISTS_OR_ADD)],
    )
    scripted.answer = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK), ok_response=ok
    )
    scripted.answer.dynamic_metadata.update({"claims": {"sub": "u-1", "scope": "a b"}})
    seen = await call(
        target,
        [(b"host", b"edge"), (b"x-user-id", b"spoof"), (b"x-tag", b"first"), (b"cookie", b"c")],
    )
    assert seen["status"] == 200
    assert seen["headers"] == [
        (b"host", b"edge"), (b"x-tag", b"first"), (b"x-user-id", b"u-1"), (b"x-tag", b"second"),
    ]  # fmt: skip
    assert (b"x-authz", b"yes") in seen["response_headers"]
    assert seen["claims"] == {"sub": "u-1", "scope": "a b"}
    request = scripted.seen[0].attributes.request.http
    assert (request.path, request.headers[":authority"], request.id) == (
        "/api/v1/x",
        "edge",
        "rid-1",
    )


async def test_a_denial_is_sent_with_the_servers_status_headers_and_body(
    server: tuple[Scripted, str],
):
    scripted, target = server
    scripted.answer = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message="nope"),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=451),
            headers=[option("x-why", "legal")],
            body="plain words",
        ),
    )
    seen = await call(target, [])
    assert seen["status"] == 451 and seen["body"] == b"plain words"
    assert (b"x-why", b"legal") in seen["response_headers"]
    assert (b"x-request-id", b"rid-1") in seen["response_headers"]
    scripted.answer.denied_response.body = '{"error": "forbidden", "reason": "geo"}'
    scripted.answer.denied_response.ClearField("status")
    seen = await call(target, [])
    assert seen["status"] == 403
    assert json.loads(seen["body"]) == {
        "error": "forbidden",
        "reason": "geo",
        "request_id": "rid-1",
    }


async def test_errors_and_timeouts_fail_closed_unless_failure_mode_allow(
    server: tuple[Scripted, str],
):
    scripted, target = server
    scripted.delay = 0.5
    seen = await call(target, [], timeout=0.05)
    assert seen["status"] == 403
    assert json.loads(seen["body"])["reason"] == "ext_authz_error"
    seen = await call(target, [], timeout=0.05, status_on_error=503)
    assert seen["status"] == 503
    scripted.delay = 0.0
    scripted.answer = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAVAILABLE),
        error_response=external_auth_pb2.DeniedHttpResponse(),
    )
    assert (await call(target, []))["status"] == 403
    allowed = await call(target, [(b"x-a", b"1")], failure_mode_allow=True)
    assert allowed["status"] == 200 and allowed["claims"] is None


def _query_answer(to_set: dict[str, str], to_remove: list[str]) -> external_auth_pb2.CheckResponse:
    ok = external_auth_pb2.OkHttpResponse(
        query_parameters_to_set=[
            base_pb2.QueryParameter(key=k, value=v) for k, v in to_set.items()
        ],
        query_parameters_to_remove=to_remove,
    )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK), ok_response=ok
    )


@pytest.mark.parametrize(
    ("query", "to_set", "to_remove", "upstream_query"),
    [
        # Set replaces every parameter of its key, in the first one's place.
        (b"a=1&b=2&a=3", {"a": "x"}, [], b"a=x&b=2"),
        (b"b=2", {"tenant": "t-9"}, [], b"b=2&tenant=t-9"),
        (b"", {"tenant": "t-9"}, [], b"tenant=t-9"),
        (b"flag&b=2", {"flag": "on"}, [], b"flag=on&b=2"),
        # Removal comes after setting, as in Envoy, and drops valueless parameters too.
        (b"a=1&token=s3cret&flag", {}, ["token", "flag"], b"a=1"),
        (b"a=1", {"a": "2"}, ["a"], b""),
        # Keys compare as sent: an encoded key is another key.
        (b"a%20b=1&a b=2", {}, ["a%20b"], b"a b=2"),
        # A value cannot add parameters, a fragment or a line; its own escapes stay.
        (b"a=1", {"a": "x&admin=1#f\r\nX: y"}, [], b"a=x%26admin=1%23f%0D%0AX:%20y"),
        (b"", {"q": "%41%zz é"}, [], b"q=%41%25zz%20%C3%A9"),
        (b"", {"k=v&w": "1"}, [], b"k%3Dv%26w=1"),
    ],
)
async def test_query_parameters_are_set_then_removed_as_envoy_does(
    server: tuple[Scripted, str],
    query: bytes,
    to_set: dict[str, str],
    to_remove: list[str],
    upstream_query: bytes,
):
    scripted, target = server
    scripted.answer = _query_answer(to_set, to_remove)
    seen = await call(target, [(b"host", b"edge")], query=query)
    assert seen["status"] == 200
    assert seen["query"] == upstream_query
    # The server was asked about the query as the client sent it.
    sent = scripted.seen[0].attributes.request.http
    assert sent.path == "/api/v1/x" + ("?" + query.decode() if query else "")


async def test_query_mutations_reach_the_upstream_through_the_gateway(
    server: tuple[Scripted, str], start_gateway: Any
):
    scripted, target = server
    scripted.answer = _query_answer({"tenant": "t-9", "page": "2"}, ["api_key"])
    with ScriptedUpstream("queries") as upstream:
        gateway = start_gateway(ext_authz_routes(upstream.url, target))
        reply = await asyncio.to_thread(
            raw_request, gateway.port, get("/api/v1/shop/items?page=1&api_key=k&page=3&q=a%20b")
        )
    assert reply.status == 200, reply.body
    assert reply.json()["path"] == "/api/v1/shop/items?page=2&q=a%20b&tenant=t-9"
    asked = scripted.seen[0].attributes.request.http.path
    assert asked == "/api/v1/shop/items?page=1&api_key=k&page=3&q=a%20b"


def _answer_setting(
    key: str, value: str = "v", raw: bytes = b"", *, where: str = "upstream"
) -> Any:
    """An answer that sets one header: on the upstream request, the client's response, or a
    denial."""
    made = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))
    if raw:
        made.header.raw_value = raw
    if where == "denial":
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=external_auth_pb2.DeniedHttpResponse(headers=[made]),
        )
    ok = external_auth_pb2.OkHttpResponse(
        **({"headers": [made]} if where == "upstream" else {"response_headers_to_add": [made]})
    )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK), ok_response=ok
    )


_NOT_A_HEADER_LINE = [
    pytest.param("x-tag", "a\r\nx-injected: yes", b"", id="crlf-in-value"),
    pytest.param("x-tag", "a\nx-injected: yes", b"", id="lf-in-value"),
    pytest.param("x-tag", "a\rb", b"", id="cr-in-value"),
    pytest.param("x-tag", "a\x00b", b"", id="nul-in-value"),
    pytest.param("x-tag", "a\x1bb", b"", id="escape-in-value"),
    pytest.param("x-tag", "", b"ok\r\n\r\nGET /admin HTTP/1.1", id="smuggled-request-in-raw-value"),
    pytest.param("x-tag: b\r\nx-injected", "v", b"", id="line-in-name"),
    pytest.param("x tag", "v", b"", id="space-in-name"),
    pytest.param("x-tag:", "v", b"", id="colon-in-name"),
    pytest.param("x-täg", "v", b"", id="non-ascii-name"),
]


@pytest.mark.parametrize(("key", "value", "raw"), _NOT_A_HEADER_LINE)
@pytest.mark.parametrize("where", ["upstream", "response", "denial"])
async def test_an_answer_setting_something_that_is_not_a_header_line_fails_closed(
    server: tuple[Scripted, str], key: str, value: str, raw: bytes, where: str
):
    scripted, target = server
    scripted.answer = _answer_setting(key, value, raw, where=where)
    seen = await call(target, [(b"host", b"edge")])
    assert seen["status"] == 403
    assert json.loads(seen["body"])["reason"] == "ext_authz_error"
    assert "headers" not in seen, "the upstream was reached"
    assert all(b"\n" not in n + v and b"\r" not in n + v for n, v in seen["response_headers"])
    # failure_mode_allow lets the request through as the client sent it, without the answer.
    allowed = await call(target, [(b"host", b"edge")], failure_mode_allow=True)
    assert allowed["status"] == 200
    assert allowed["headers"] == [(b"host", b"edge")]
    assert allowed["response_headers"] == [(b"x-up", b"1")]


async def test_a_value_that_is_not_latin_1_goes_out_as_utf_8_as_envoy_sends_it(
    server: tuple[Scripted, str],
):
    scripted, target = server
    scripted.answer = _answer_setting("x-team", "zürich-€")
    seen = await call(target, [])
    assert seen["status"] == 200
    assert seen["headers"] == [(b"x-team", "zürich-€".encode())]
    # HTAB is part of a field value (RFC 9110 5.5), so it passes.
    scripted.answer = _answer_setting("x-pair", "a\tb", where="response")
    seen = await call(target, [])
    assert (b"x-pair", b"a\tb") in seen["response_headers"]


async def test_an_injected_header_line_never_reaches_the_upstream_through_the_gateway(
    server: tuple[Scripted, str], start_gateway: Any
):
    scripted, target = server
    scripted.answer = _answer_setting("x-tag", "a\r\nx-injected: yes")
    with ScriptedUpstream("injection") as upstream:
        gateway = start_gateway(ext_authz_routes(upstream.url, target))
        refused = await asyncio.to_thread(raw_request, gateway.port, get("/api/v1/shop/items"))
        scripted.answer = _answer_setting("x-tag", "fine")
        served = await asyncio.to_thread(raw_request, gateway.port, get("/api/v1/shop/items"))
        hits = sum(upstream.hits.values())
    assert refused.status == 403, refused.body
    assert refused.json()["reason"] == "ext_authz_error"
    # The gateway keeps serving, and a well-formed answer goes through as before.
    assert served.status == 200, served.body
    assert served.json()["headers"]["x-tag"] == "fine"
    assert "x-injected" not in served.json()["headers"]
    assert hits == 1
