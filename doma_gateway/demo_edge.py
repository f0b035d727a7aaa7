"""The demo's edge: one routes directory for both modes, and the domain services behind it.

Three domains in three layers (``character`` < ``scan`` < ``my``), ``scan`` with a deprecated
``v1`` and a default ``v2``, each served by an echo service that answers with what it received.
The ``auth:`` section keeps revocations in memory, so nothing outside the demo is needed.
"""

from __future__ import annotations

from pathlib import Path

from doma_gateway.demo_issuer import AUDIENCE, ISSUER, DemoIssuer

__all__ = ["ADMIN_SCOPE", "DOMAINS", "write_routes"]

DOMAINS = ("character", "scan", "my")
ADMIN_SCOPE = "doma.revocation.admin"

_AUTH = f"""\
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

_EDGE = """\
layers: [infrastructure, business-logic, product]
"""

_DOMAIN_FILES = {
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


def write_routes(directory: Path, issuer: DemoIssuer, ports: dict[str, int]) -> Path:
    """The demo's routes directory (with the issuer's JWKS) under ``directory``."""
    routes = directory / "routes"
    routes.mkdir()
    (routes / "jwks.json").write_text(issuer.jwks())
    (routes / "auth.yaml").write_text(_AUTH)
    (routes / "edge.yaml").write_text(_EDGE)
    for name, template in _DOMAIN_FILES.items():
        (routes / f"{name}.yaml").write_text(template.format(port=ports[name]))
    return routes
