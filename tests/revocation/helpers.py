"""Routes files, tokens and check requests for the revocation tests."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import processes
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks

ADMIN_SCOPE = "doma.revocation.admin"


def write_routes(
    directory: Path,
    key: SigningKey,
    revocation: str,
    *,
    key_source: str = "jwks_file: jwks.json",
    rest: str = "",
) -> Path:
    """A routes file trusting ``key`` (a JWKS file of it, unless ``key_source`` names another
    source), with ``revocation`` (YAML, indented 4) as auth.revocation, then ``rest``."""
    (directory / "jwks.json").write_bytes(jwks(key))
    routes = directory / "routes.yaml"
    routes.write_text(
        f"""\
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      {key_source}
  claims_to_headers:
    sub: x-user-id
  revocation:
{revocation}
"""
        + rest
    )
    return routes


def revocation_yaml(store: str, bus: str, prefix: str, **extra: object) -> str:
    lines = [f"store: {store}", f"bus: {bus}", f"key_prefix: {prefix}"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join("    " + line for line in lines)


def admin_token(key: SigningKey, scope: str = ADMIN_SCOPE, **claims: object) -> str:
    return key.token(sub="revocation-admin", scope=scope, **claims)


def check_request(token: str, path: str = "/api/v1/scan/results") -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", path
    http.headers["authorization"] = f"Bearer {token}"
    return request


class Checker:
    """A blocking gRPC client of one authz process's Check and Health."""

    def __init__(self, port: int):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = external_auth_pb2_grpc.AuthorizationStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def check(self, token: str, timeout: float = 5.0) -> tuple[int, str]:
        """(HTTP status, reason) of one check: 200 "ok" when allowed."""
        response = self.stub.Check(check_request(token), timeout=timeout)
        if response.HasField("ok_response"):
            return 200, "ok"
        return response.denied_response.status.code, response.status.message

    def serving(self) -> bool:
        reply = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_serving(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.serving():
                return
            time.sleep(0.05)
        raise TimeoutError("authz never became SERVING")

    def close(self) -> None:
        self.channel.close()


def wait_for(condition, timeout: float, interval: float = 0.01) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``condition()`` is true; TimeoutError after ``timeout``."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


def start_authz_process(routes: Path) -> processes.ServerProcess:
    """``doma-gateway authz`` on free loopback ports for gRPC, metrics and the revocation API."""
    return processes.start(
        ["authz", "--routes", str(routes), "--listen", "127.0.0.1:0",
         "--metrics", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    )  # fmt: skip
