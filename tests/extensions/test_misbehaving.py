"""Extensions that misbehave, in a real gateway: what they do wrong stays with their own call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from doma_gateway.echo import EchoServer
from tests.support import processes
from tests.support.http import send
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks

KEY = SigningKey()
FAKES = "tests.support.extensions"


def routes(echo: int) -> str:
    return f"""\
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      jwks_file: jwks.json
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
  registered:
    - name: grant-scope
      factory: {FAKES}:misbehaving
      points: [rides.hooks]
      settings: {{mode: grant_scope, when_path: /trips/scope}}
    - name: grant-role
      factory: {FAKES}:misbehaving
      points: [rides.hooks]
      settings: {{mode: grant_role, when_path: /trips/role}}
"""


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
