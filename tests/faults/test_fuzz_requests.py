"""Hostile requests fuzzed with Hypothesis against real processes: the gateway (auth in process),
the authz HTTP check listener and the authz gRPC Check. Request targets, header names and values
and Authorization values are generated; the answer is always a clear status below 500 (a JSON
reason from our code, or the HTTP parser's 400), never a 500, and the processes never log a
traceback.

The pure functions underneath are fuzzed where they live: tests/authz/test_paths.py (path
normalization), tests/authz/test_tokens.py (bearer parsing), tests/gateway/test_header_properties.py
(header filtering).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import routes_text
from tests.support import processes
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks
from tests.support.upstreams import ScriptedUpstream

pytestmark = pytest.mark.faults

KEY = SigningKey()
GOOD = KEY.token(sub="fuzz")
AUTH = f"""\
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      jwks_file: jwks.json
  claims_to_headers:
    sub: x-user-id
  bypass:
    - /api/v1/*/health
"""
_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TARGET = "abcxyz019/._-~%2fF5Ce:@!$&'()*+,;=?#[]\\\"<>^`{|}"
_VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
)

targets = st.one_of(
    st.builds(lambda s: "/" + s, st.text(alphabet=_TARGET, max_size=50)),
    st.builds(
        lambda prefix, s: prefix + s,
        st.sampled_from(["/api/v2/scan/", "/api/v1/scan/results/", "/api/v1/image/", "/api/"]),
        st.text(alphabet=_TARGET, max_size=40),
    ),
    st.sampled_from(["*", "http://evil/api/v2/scan/x", "//api/v2/scan", "/api/v1/x/health"]),
)
authorizations = st.one_of(
    _VALUE,
    st.builds(lambda s: "Bearer " + s, st.text(alphabet=_TCHAR + "=/", max_size=80)),
    st.builds(lambda cut: "Bearer " + GOOD[:cut], st.integers(0, len(GOOD))),
    st.builds(lambda s: f"Bearer {GOOD}{s}", _VALUE),
    st.just(f"Bearer {GOOD}"),
)
headers = st.lists(st.tuples(st.text(alphabet=_TCHAR, min_size=1, max_size=20), _VALUE), max_size=6)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW"])


def _raw(port: int, method: str, target: str, fields: list[tuple[str, str]]) -> tuple[int, bytes]:
    head = f"{method} {target} HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in fields)
    data = head.encode("latin-1") + b"content-length: 0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert match, answer[:200]
    return int(match.group(1)), answer


def _clear(status: int, answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    if b"\r\nx-upstream: " in head.lower():
        return  # the upstream's own answer (it refuses unknown methods with 501), passed on
    assert status < 500, answer[:500]
    if status >= 400 and body.startswith(b"{"):
        assert json.loads(body)["reason"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, processes.ServerProcess]]:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    (directory / "jwks.json").write_bytes(jwks(KEY))
    echo = ScriptedUpstream("fuzz").start()
    edge = routes_text([echo.url]).replace(
        "    auth: bypass\n    depends_on", "    auth: required\n    depends_on"
    )
    (directory / "edge.yaml").write_text(AUTH + edge)
    (directory / "auth.yaml").write_text(AUTH)
    gateway = processes.start(
        [
            "serve",
            "--routes",
            str(directory / "edge.yaml"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--no-watch",
        ]
    )
    authz = processes.start(
        [
            "authz",
            "--routes",
            str(directory / "auth.yaml"),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--no-metrics",
        ]
    )
    yield {"gateway": gateway, "authz": authz}
    gateway.stop()
    authz.stop()
    echo.stop()
    for process in (gateway, authz):
        assert "Traceback" not in process.stderr(), process.stderr()[-3000:]


def test_the_fuzz_stack_answers_a_good_request(stack: dict[str, processes.ServerProcess]):
    auth = [("authorization", f"Bearer {GOOD}")]
    assert _raw(stack["gateway"].port("http"), "GET", "/api/v2/scan/x", auth)[0] == 200
    assert _raw(stack["gateway"].port("http"), "GET", "/api/v2/scan/x", [])[0] == 401
    assert _raw(stack["authz"].port("http"), "GET", "/api/v1/scan/x", auth)[0] == 200


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(methods, targets, headers, authorizations)
def test_the_gateway_answers_hostile_requests_clearly(
    stack: dict[str, processes.ServerProcess], method, target, fields, authorization
):
    status, answer = _raw(
        stack["gateway"].port("http"), method, target, [*fields, ("authorization", authorization)]
    )
    _clear(status, answer)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(methods, targets, headers, authorizations)
def test_the_http_check_listener_answers_hostile_requests_clearly(
    stack: dict[str, processes.ServerProcess], method, target, fields, authorization
):
    status, answer = _raw(
        stack["authz"].port("http"), method, target, [*fields, ("authorization", authorization)]
    )
    _clear(status, answer)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(max_size=10),
    st.text(max_size=80),
    st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=6),
    authorizations,
)
def test_grpc_check_decides_hostile_check_requests(
    stack: dict[str, processes.ServerProcess], method, path, fields, authorization
):
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = method, path
    for name, value in fields.items():
        http.headers[name] = value
    http.headers["authorization"] = authorization
    with grpc.insecure_channel(f"127.0.0.1:{stack['authz'].port('grpc')}") as channel:
        reply = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5)
    if reply.HasField("denied_response"):
        assert 400 <= reply.denied_response.status.code < 500, reply
        assert json.loads(reply.denied_response.body)["reason"]
