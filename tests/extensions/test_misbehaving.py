"""Extensions that misbehave, in a real gateway: what they do wrong stays with their own call."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from doma_gateway.echo import EchoServer
from tests.support import processes
from tests.support.http import send
from tests.support.tokens import AUTH_SECTION, SigningKey, jwks

KEY = SigningKey()
FAKES = "tests.support.extensions"


def routes(echo: int) -> str:
    return f"""\
{AUTH_SECTION}
layers: [product]
domains:
  rides:
    layer: product
    owner: team-rides
    upstream: rides-api
    versions:
      v1:
        routes:
          - {{name: trips, path: /trips/**}}
          - name: admin
            path: /admin/**
            policies:
              - scopes: {{scopes: [rides.admin]}}
          - name: staff
            path: /staff/**
            policies:
              - scopes: {{roles: [rides.admin], roles_claim: realm.roles}}
upstreams:
  rides-api: {{endpoints: ["http://127.0.0.1:{echo}"]}}
extensions:
  points:
    rides.hooks: {{on_error: fail_open}}
    rides.guard: {{on_error: fail_closed}}
  registered:
    - name: grant-scope
      factory: {FAKES}:misbehaving
      points: [rides.hooks]
      settings: {{mode: grant_scope, when_path: /trips/scope}}
    - name: grant-role
      factory: {FAKES}:misbehaving
      points: [rides.hooks]
      settings: {{mode: grant_role, when_path: /trips/role}}
{raisers()}
    - name: newline-request-header
      factory: {FAKES}:misbehaving
      points: [rides.guard]
      settings: {{mode: set_header, name: "x-evil\\n", when_path: /trips/newline/request}}
    - name: newline-response-header
      factory: {FAKES}:misbehaving
      points: [post_response]
      settings: {{mode: set_header, name: "x-evil\\n", when_path: /trips/newline/response}}
{own_headers()}
    - name: swallow-cancel
      factory: {FAKES}:misbehaving
      points: [rides.guard]
      timeout_seconds: 0.1
      settings: {{mode: swallow_cancel, for: 3, when_path: /trips/swallow}}
"""


RAISES = ("cancelled", "system_exit", "keyboard_interrupt")


def raisers() -> str:
    """For each mode, one extension at a closed point and one at post_response, on own paths."""
    entries = []
    for mode in RAISES:
        for name, point, path in (
            (mode, "rides.guard", "guard"),
            (f"{mode}-late", "post_response", "late"),
        ):
            entries.append(
                f"""\
    - name: {name}
      factory: {FAKES}:misbehaving
      points: [{point}]
      settings: {{mode: {mode}, when_path: /trips/{path}/{mode}}}
"""
            )
    return "".join(entries)


# Response headers the gateway keeps to itself, whatever an extension at post_response says.
OWN_HEADERS = ("keep-alive", "proxy-connection", "proxy-authenticate", "x-request-id")


def own_headers() -> str:
    return "".join(
        f"""\
    - name: set-{name}
      factory: {FAKES}:misbehaving
      points: [post_response]
      settings: {{mode: set_header, name: {name}, when_path: /trips/own/{name}}}
"""
        for name in OWN_HEADERS
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[processes.ServerProcess]:
    echo = EchoServer().start()
    folder = tmp_path_factory.mktemp("routes")
    (folder / "jwks.json").write_bytes(jwks(KEY))
    path: Path = folder / "routes.yaml"
    path.write_text(routes(echo.port))
    server = processes.start(
        ["serve", "--routes", str(path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    )
    yield server
    server.stop()
    echo.stop()


def auth(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def status(server: processes.ServerProcess, path: str, token: str) -> int:
    return send(server.port("http"), path, [auth(token)]).status


@pytest.mark.parametrize(
    ("mutating", "guarded"),
    [("/trips/scope", "/admin/x"), ("/trips/role", "/staff/x")],
    ids=["top-level claim", "nested claim"],
)
def test_an_extension_cannot_grant_a_token_more_than_it_carries(
    gateway: processes.ServerProcess, mutating: str, guarded: str
):
    token = KEY.token(scope="rides.read", realm={"roles": ["rider"]})
    assert status(gateway, f"/api/v1/rides{mutating}", token) == 200
    # The same token, so the same cached claims: still only what the issuer signed.
    assert status(gateway, f"/api/v1/rides{guarded}", token) == 403


def metric(server: processes.ServerProcess, line: str) -> float:
    for row in send(server.port("admin"), "/metrics").body.decode().splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


def errors(server: processes.ServerProcess, extension: str, point: str, kind: str) -> float:
    return metric(
        server,
        f'doma_gateway_extension_errors_total{{extension="{extension}",kind="{kind}",'
        f'point="{point}"}}',
    )


@pytest.mark.parametrize("mode", RAISES)
def test_an_extension_raising_a_base_exception_fails_closed_at_a_closed_point(
    gateway: processes.ServerProcess, mode: str
):
    before = errors(gateway, mode, "rides.guard", "exception")
    token = KEY.token()
    reply = send(gateway.port("http"), f"/api/v1/rides/trips/guard/{mode}", [auth(token)])
    assert reply.status == 503
    body = json.loads(reply.body)
    assert (body["reason"], body["extension"]) == ("extension_failed", mode)
    assert errors(gateway, mode, "rides.guard", "exception") == before + 1
    # The process lives on and serves the next request.
    assert status(gateway, "/api/v1/rides/trips/1", token) == 200


@pytest.mark.parametrize("mode", RAISES)
def test_an_extension_raising_a_base_exception_after_the_upstream_keeps_its_answer(
    gateway: processes.ServerProcess, mode: str
):
    before = errors(gateway, f"{mode}-late", "post_response", "exception")
    reply = send(gateway.port("http"), f"/api/v1/rides/trips/late/{mode}", [auth(KEY.token())])
    assert reply.status == 200
    assert json.loads(reply.body)["path"].endswith(f"/trips/late/{mode}")
    assert errors(gateway, f"{mode}-late", "post_response", "exception") == before + 1


def test_an_extension_that_ignores_cancellation_cannot_outrun_its_timeout(
    gateway: processes.ServerProcess,
):
    before = errors(gateway, "swallow-cancel", "rides.guard", "timeout")
    started = time.monotonic()
    reply = send(gateway.port("http"), "/api/v1/rides/trips/swallow", [auth(KEY.token())])
    took = time.monotonic() - started
    assert reply.status == 503 and json.loads(reply.body)["reason"] == "extension_failed"
    assert took < 2, f"the request waited {took:.1f}s for an extension with a 0.1s timeout"
    assert errors(gateway, "swallow-cancel", "rides.guard", "timeout") == before + 1


def test_a_header_name_ending_in_a_newline_never_leaves_the_gateway(
    gateway: processes.ServerProcess,
):
    token = KEY.token()
    refused = send(gateway.port("http"), "/api/v1/rides/trips/newline/request", [auth(token)])
    assert refused.status == 503 and json.loads(refused.body)["extension"] == (
        "newline-request-header"
    )
    kept = send(gateway.port("http"), "/api/v1/rides/trips/newline/response", [auth(token)])
    assert kept.status == 200 and "x-evil" not in kept.headers
    assert json.loads(kept.body)["path"].endswith("/trips/newline/response")
    assert errors(gateway, "newline-response-header", "post_response", "exception") == 1


@pytest.mark.parametrize("name", OWN_HEADERS)
def test_an_extension_cannot_set_hop_by_hop_headers_or_the_request_id(
    gateway: processes.ServerProcess, name: str
):
    reply = send(
        gateway.port("http"),
        f"/api/v1/rides/trips/own/{name}",
        [auth(KEY.token()), ("x-request-id", "r-own-1")],
    )
    assert reply.status == 200
    assert reply.headers.get(name) != "v"
    assert reply.headers["x-request-id"] == "r-own-1"
    assert errors(gateway, f"set-{name}", "post_response", "exception") == 1
