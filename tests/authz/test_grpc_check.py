"""The Check servicer over a real gRPC channel, driven by the recorded check cases."""

import asyncio
import json

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.check import allow
from authz.grpc_check import MAX_CLAIM_DEPTH, AuthorizationServicer, check_response
from authz.loader import load_auth_settings
from authz.server import AuthzServer
from doma_gateway.authz_process import build_authz
from tests.support.cases import case_ids, load_cases
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks

KEY = SigningKey()
CASES = load_cases(KEY)
ROUTES = f"""\
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      jwks_file: jwks.json
  claims_to_headers:
    sub: x-user-id
    email: x-user-email
  bypass:
    - /api/v1/auth/kakao/callback
    - /api/v1/auth/.well-known/jwks.json
    - /api/v1/*/health
"""


@pytest.fixture
async def stub(tmp_path):
    (tmp_path / "jwks.json").write_bytes(jwks(KEY))
    (tmp_path / "routes.yaml").write_text(ROUTES)
    stack = build_authz(load_auth_settings(tmp_path / "routes.yaml"))
    server = AuthzServer(
        AuthorizationServicer(stack.authorizer, stack.metrics, loop=asyncio.get_running_loop()),
        listen="127.0.0.1:0",
        ready=stack.keys_ready,
        background=stack.keep_keys_fresh,
        grace=1,
    )
    await server.start()
    await stack.keys_ready.wait()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield external_auth_pb2_grpc.AuthorizationStub(channel), health_pb2_grpc.HealthStub(channel)
    await server.shutdown()
    await stack.http.aclose()


def check_request(method, path, headers, raw=False):
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = method, path, "edge.test"
    if raw:
        for name, values in headers.items():
            for value in values:
                http.header_map.headers.append(
                    base_pb2.HeaderValue(key=name, raw_value=value.encode())
                )
    else:
        for name, values in headers.items():
            http.headers[name] = ",".join(values)
    return request


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
@pytest.mark.parametrize("raw", [False, True], ids=["headers", "header_map"])
async def test_recorded_case(stub, case, raw):
    check, _ = stub
    response = await check.Check(check_request(case.method, case.path, case.headers, raw))
    expect = case.expect
    if expect["status"] == 200:
        assert response.status.code == 0 and response.HasField("ok_response")
        ok = response.ok_response
        set_headers = {option.header.key: option.header.value for option in ok.headers}
        for name, value in expect.get("upstream", {}).items():
            assert set_headers[name] == value
            assert name not in ok.headers_to_remove
        for option in ok.headers:
            assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        for name in expect.get("upstream_absent", []):
            assert name in ok.headers_to_remove
    else:
        denied = response.denied_response
        assert response.status.code != 0
        assert denied.status.code == expect["status"]
        assert json.loads(denied.body)["reason"] == expect["reason"]
        for secret in case.headers.get("authorization", []):
            token = secret.partition(" ")[2]
            assert token[:20] not in denied.body
        if expect["status"] == 401:
            challenge = {o.header.key: o.header.value for o in denied.headers}["www-authenticate"]
            assert 'error="invalid_token"' in challenge


async def test_health_is_serving_once_keys_are_loaded(stub):
    _, health = stub
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://issuer.test", "sub": "alice", "iat": 1700000000, "exp": 1.7e9 + 0.5},
        {"admin": True, "disabled": False, "level": 0, "nothing": None},
        {"roles": ["a", "b"], "org": {"id": 7, "tags": ["x"], "deep": {"ok": True}}, "n": 2**60},
        {"empty_list": [], "empty_object": {}, "unicode": "ü\u2028"},
    ],
)
def test_claims_in_dynamic_metadata_are_what_struct_update_makes(claims):
    decision = allow("ok", (("x-user-id", "alice"),), ("x-user-email",), claims)
    expected = struct_pb2.Struct()
    expected.update({"claims": claims})
    response = check_response(decision)
    assert response.dynamic_metadata == expected
    assert response.status.code == 0 and response.HasField("status")
    assert response.HasField("ok_response")
    [option] = response.ok_response.headers
    assert (option.header.key, option.header.value) == ("x-user-id", "alice")
    assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert list(response.ok_response.headers_to_remove) == ["x-user-email"]


def nested(levels: int, leaf: object = 1) -> object:
    value = leaf
    for level in range(levels):
        value = {"a": value} if level % 2 else [value]
    return value


def test_a_claim_nested_past_the_limit_is_left_out_and_the_answer_stays_readable():
    claims = {
        "sub": "alice",
        # Forty levels: without the limit, an answer protobuf refuses to parse.
        "deep": nested(40),
        "just_over": nested(MAX_CLAIM_DEPTH + 1),
        "ok": nested(MAX_CLAIM_DEPTH),
    }
    response = check_response(allow("ok", (), (), claims))
    kept = response.dynamic_metadata.fields["claims"].struct_value.fields
    assert set(kept) == {"sub", "ok"}
    # Envoy parses with protobuf's default recursion limit; so does this parser.
    assert external_auth_pb2.CheckResponse.FromString(response.SerializeToString()) == response


def test_an_allow_without_headers_is_still_an_ok_response():
    response = check_response(allow("bypass", (), ()))
    assert response.HasField("ok_response") and not response.HasField("denied_response")
