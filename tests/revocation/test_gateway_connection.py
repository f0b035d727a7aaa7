"""The gateway's in-process auth on one keep-alive connection: a client's repeated credential is
recalled from the connection's memo, and a revocation or a pulled key still denies the very next
request on that connection (real gateway process, Redis store and bus, JWKS over HTTP)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from doma_gateway.echo import EchoServer
from tests.revocation.helpers import revocation_yaml, write_routes
from tests.support import processes
from tests.support.jwks_server import JwksServer
from tests.support.routes import scan_catch_all
from tests.support.services import unique_prefix
from tests.support.tokens import SigningKey, jwks

pytestmark = pytest.mark.e2e

KEY, PULLED = SigningKey(), SigningKey()


class Client:
    """One HTTP/1.1 connection to the gateway, kept open across requests."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def get(self, token: str) -> tuple[int, str]:
        status, body = self.send([("authorization", f"Bearer {token}")])
        return status, body.get("reason") or body["headers"]["x-user-id"]

    def send(self, headers: list[tuple[str, str]]) -> tuple[int, dict]:
        """GET with ``headers`` as given, repeats included; the status and the JSON body."""
        self.connection.putrequest("GET", "/api/v1/scan/x")
        for name, value in headers:
            self.connection.putheader(name, value)
        self.connection.endheaders()
        reply = self.connection.getresponse()
        body = json.loads(reply.read() or b"{}")
        assert not reply.will_close, "the gateway closed the connection"
        return reply.status, body

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def gateway(tmp_path, redis_url) -> Iterator[tuple[processes.ServerProcess, JwksServer, str]]:
    keys = JwksServer(jwks(KEY, PULLED))
    upstream = EchoServer().start()
    routes = write_routes(
        tmp_path,
        KEY,
        revocation_yaml(redis_url, redis_url, unique_prefix("connection")),
        key_source=f"jwks_url: {keys.url}\n      jwks_cache: {{refetch_min_interval_seconds: 0}}",
        rest=scan_catch_all(f"http://127.0.0.1:{upstream.port}"),
    )
    server = processes.start(
        ["serve", "--routes", str(routes), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    )
    yield server, keys, str(routes)
    server.stop()
    upstream.stop()
    keys.close()
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]


def warmed(server: processes.ServerProcess, token: str, user: str) -> Client:
    """A connection whose last requests carried ``token``: its memo holds the credential."""
    client = Client(server.port("http"))
    for _ in range(3):
        assert client.get(token) == (200, user)
    return client


def eventually(client: Client, token: str, expected: tuple[int, str], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while (seen := client.get(token)) != expected:
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def test_a_revocation_denies_the_next_request_on_the_same_connection(gateway):
    server, _, routes = gateway
    token = KEY.token(sub="dora")
    client = warmed(server, token, "dora")
    done = subprocess.run(
        [sys.executable, "-m", "doma_gateway.cli", "revoke", "--sub", "dora", "--direct",
         "--routes", routes],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    eventually(client, token, (401, "token_revoked"))
    other = KEY.token(sub="eve")
    assert client.get(other) == (200, "eve")
    client.close()


def test_a_pulled_key_denies_the_next_request_on_the_same_connection(gateway):
    server, keys, _ = gateway
    token = PULLED.token(sub="frank")
    client = warmed(server, token, "frank")
    keys.document = jwks(KEY)
    # A token with a kid the gateway has not seen makes it fetch the key set at once.
    assert client.get(SigningKey().token())[0] == 401
    assert client.get(token) == (401, "unknown_key")
    assert client.get(KEY.token(sub="grace")) == (200, "grace")
    client.close()


def test_a_recalled_credential_sent_twice_is_refused(gateway):
    server, _, _ = gateway
    token = KEY.token(sub="heidi")
    client = warmed(server, token, "heidi")
    twice = [("authorization", f"Bearer {token}")] * 2
    status, body = client.send(twice)
    assert (status, body["reason"]) == (401, "multiple_authorization_headers")
    assert client.get(token) == (200, "heidi")
    client.close()


def test_identity_headers_sent_with_a_recalled_credential_never_reach_the_upstream(gateway):
    server, _, _ = gateway
    token = KEY.token(sub="ivan")
    client = warmed(server, token, "ivan")
    status, body = client.send(
        [("x-user-id", "admin"), ("authorization", f"Bearer {token}"), ("x_user_id", "admin"),
         ("x-user_id", "admin")]
    )  # fmt: skip
    assert status == 200
    received = body["headers"]
    assert received["x-user-id"] == "ivan"
    assert "x_user_id" not in received and "x-user_id" not in received
    client.close()
