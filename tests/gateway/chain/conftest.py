"""Fixtures of the policy tests: a signing key, routes with an auth section, raw requests."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import shared_redis_url
from tests.support.tokens import AUTH_SECTION, SigningKey, jwks

KEY = SigningKey()


def auth_section(tmp_path: Path, bypass: tuple[str, ...] = ()) -> str:
    (tmp_path / "jwks.json").write_bytes(jwks(KEY))
    lines = "".join(f"    - {pattern}\n" for pattern in bypass)
    return f"""\
{AUTH_SECTION}
  claims_to_headers:
    sub: x-user-id
{"  bypass:" + chr(10) + lines if bypass else ""}"""


def shop_routes(
    upstream: str,
    *,
    policies: str,
    routes: str,
    domain: str = "",
    main: str = "",
    upstreams: str = "",
) -> str:
    """Domain shop (layer product, upstream ``main`` at ``upstream``, no breaker or outlier
    ejection) with ``policies`` as its domain ``policies:`` items and ``routes`` as its v1
    routes, both YAML lines indented for their place; ``domain`` adds more domain keys, ``main``
    more keys of upstream ``main``, ``upstreams`` more upstreams."""
    return f"""\
layers: [product]
domains:
  shop:
    layer: product
    owner: team-shop
    upstream: main
{domain}    policies:
{policies}    versions:
      v1:
        routes:
{routes}upstreams:
  main:
    endpoints: [{upstream}]
{main}    circuit_breaker: false
    outlier_detection: false
{upstreams}"""


def ext_authz_routes(upstream: str, grpc: str, extra: str = "") -> str:
    """Domain shop behind a remote ext-authz server: /api/v1/shop/admin/** needs shop.admin."""
    return shop_routes(
        upstream,
        policies=f"""\
      - auth:
          ext_authz:
            grpc_service: {grpc}
            timeout_seconds: 0.5
            identity_headers: [x-user-id]{extra}
""",
        routes="""\
          - name: admin
            path: /admin/**
            policies: [{scopes: {scopes: [shop.admin]}}]
          - {name: items, path: /**}
""",
    )


@dataclass
class Raw:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    port: int, request: bytes, *, source: str = "127.0.0.1", timeout: float = 10.0
) -> Raw:
    """Send ``request`` byte for byte (no client normalizes it) and read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout, (source, 0)) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in lines[1:])
        ]
        length = next((int(v) for k, v in headers if k == "content-length"), None)
        while length is not None and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return Raw(status, headers, body)


def get(path: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: edge.test", *headers]
    if body and not any(
        h.lower().startswith(("content-length", "transfer-encoding")) for h in headers
    ):
        lines.append(f"content-length: {len(body)}")
    lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url, private = shared_redis_url()
    yield url
    if private is not None:
        private.close()
