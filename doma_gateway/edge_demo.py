"""``doma-gateway edge-demo``: the edge gateway in front of three demo domains, on loopback.

A fresh RSA key and its JWKS file, a routes directory (the auth section with an in-memory
revocation store and bus, three domains in three layers, ``scan`` with a deprecated ``v1``) and
one echo service per domain are created on the spot; then ``doma-gateway serve`` runs on them
as a child process, exactly as in production. It prints a token and curl commands that show
routing, versions, a deprecated version and a 401. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from doma_gateway.echo import EchoServer

__all__ = ["run_edge_demo"]

ISSUER = "https://demo.doma-gateway.local"
AUDIENCE = "doma-demo"
KID = "edge-demo-key"
DOMAINS = ("character", "scan", "my")

AUTH = f"""\
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      jwks_file: jwks.json
  claims_to_headers:
    sub: x-user-id
  revocation:
    store: memory://edge-demo
    bus: memory://edge-demo
"""

EDGE = """\
layers: [infrastructure, business-logic, product]
"""

DOMAIN_FILES = {
    "character": """\
domains:
  character:
    layer: infrastructure
    owner: team-character
    upstream: character-api
    versions:
      v1:
        routes:
          - {{name: health, path: /health, methods: [GET], auth: bypass}}
          - {{name: catalog, path: /catalog/**, methods: [GET]}}
upstreams:
  character-api:
    endpoints: [http://127.0.0.1:{port}]
""",
    "scan": """\
domains:
  scan:
    layer: business-logic
    owner: team-scan
    depends_on: [character]
    upstream: scan-api
    default_version: v2
    versions:
      v1:
        deprecated: 2026-01-01
        sunset: 2030-01-01
        link: https://docs.example/scan/v2-migration
        routes:
          - {{name: results, path: /results/**, methods: [GET]}}
      v2:
        routes:
          - {{name: health, path: /health, methods: [GET], auth: bypass}}
          - {{name: results, path: /results/**, methods: [GET], rewrite: {{prefix: /v2}}}}
upstreams:
  scan-api:
    endpoints: [http://127.0.0.1:{port}]
    retries: {{attempts: 2, retry_on: [connect_failure, 503]}}
""",
    "my": """\
domains:
  my:
    layer: product
    owner: team-my
    depends_on: [scan, character]
    upstream: my-api
    versions:
      v1:
        routes:
          - {{name: profile, path: /profile, methods: [GET, PUT]}}
upstreams:
  my-api:
    endpoints: [http://127.0.0.1:{port}]
""",
}


def _write(workdir: Path, ports: dict[str, int]) -> rsa.RSAPrivateKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    routes = workdir / "routes"
    routes.mkdir()
    (routes / "jwks.json").write_text(
        json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]})
    )
    (routes / "auth.yaml").write_text(AUTH)
    (routes / "edge.yaml").write_text(EDGE)
    for name, template in DOMAIN_FILES.items():
        (routes / f"{name}.yaml").write_text(template.format(port=ports[name]))
    return private


def _token(private: rsa.RSAPrivateKey) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "demo-user", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": KID})


async def run_edge_demo(port: int) -> int:
    with tempfile.TemporaryDirectory(prefix="doma-edge-demo-") as tmp:
        workdir = Path(tmp)
        services = {name: EchoServer().start() for name in DOMAINS}
        private = _write(workdir, {name: server.port for name, server in services.items()})
        gateway = subprocess.Popen(  # noqa: ASYNC220 - started once; its output is read in a thread
            [sys.executable, "-m", "doma_gateway.cli", "--log-level", "warning", "serve",
             "--routes", str(workdir / "routes"), "--listen", f"127.0.0.1:{port}",
             "--admin", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert gateway.stdout is not None
            line = await asyncio.to_thread(gateway.stdout.readline)
            if '"listening"' not in line:
                print(f"the gateway did not start (exit {gateway.wait()})", file=sys.stderr)
                return 1
            listening = json.loads(line)
            _print_guide(f"http://{listening['http']}", listening["admin"], _token(private))
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            exited = asyncio.create_task(asyncio.to_thread(gateway.wait))
            await asyncio.wait(
                {exited, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if gateway.poll() is None:
                gateway.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    gateway.wait(15)
            for server in services.values():
                server.stop()
        print("stopped", flush=True)
    return 0


def _print_guide(base: str, admin: str, token: str) -> None:
    print(
        f"""
doma-gateway edge demo: {base} -> doma-gateway serve -> echo services for character, scan, my
(each echo answers with the method, path and headers it received)

A token (RS256, sub=demo-user, valid 1 h):
  export TOKEN={token}

Routing: the my domain; the upstream sees x-user-id set by the gateway (your spoofed one is gone):
  curl -s {base}/api/v1/my/profile -H "Authorization: Bearer $TOKEN" -H "x-user-id: admin"

Versions: no version in the path takes the default (v2, rewritten to /v2/...), or a header's:
  curl -s {base}/api/scan/results/42 -H "Authorization: Bearer $TOKEN"
  curl -s {base}/api/scan/results/42 -H "Authorization: Bearer $TOKEN" -H "API-Version: v1"

A deprecated version: Deprecation, Sunset and Link headers:
  curl -si {base}/api/v1/scan/results/42 -H "Authorization: Bearer $TOKEN"

An unknown version: 404 listing the supported ones:
  curl -s {base}/api/v9/scan/results/42

No token: 401 with a JSON reason and the request id:
  curl -si {base}/api/v1/my/profile

A bypassed route, no token needed:
  curl -s {base}/api/v1/character/health

The route table, metrics, health (admin listener, loopback only):
  curl -s http://{admin}/admin/routes
  curl -s http://{admin}/metrics | grep doma_gateway_requests

Ctrl-C stops everything.""",
        flush=True,
    )
