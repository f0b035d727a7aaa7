"""The layer rule in ext-authz mode, through a real Envoy that requires client certificates.

Each workload presents a certificate with a SPIFFE URI SAN from a CA made in the test; Envoy
verifies it and fills ``source.principal`` itself, so the authz server sees the caller exactly as
it would behind Istio's mTLS.
"""

from __future__ import annotations

import http.client
import json
import ssl
import textwrap
import urllib.request
from pathlib import Path

import pytest

from doma_gateway.echo import EchoServer
from doma_gateway.envoy_bootstrap import EXT_AUTHZ_BOOTSTRAP, render, start_envoy, wait_ready
from tests.e2e.test_envoy_ext_authz import free_port, wait_serving
from tests.support import processes
from tests.support.mesh_certs import MeshCA, Workload
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey

pytestmark = pytest.mark.e2e

KEY = SigningKey()


def routes_yaml(mode: str) -> str:
    pem = textwrap.indent(KEY.public_pem.decode(), " " * 8)
    return f"""\
layers: [infrastructure, business-logic, product]
inter_domain:
  mode: {mode}
  trust_domain: cluster.local
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      key_id: {KEY.kid}
      public_key: |
{pem}
  bypass:
    - /api/v1/*/health
domains:
  image:
    layer: infrastructure
    owner: team-image
    upstream: image-api
    versions:
      v1:
        routes:
          - {{name: health, path: /health, methods: [GET], auth: bypass}}
          - {{name: images, path: /images/*, methods: [GET]}}
  character:
    layer: business-logic
    owner: team-character
    depends_on: [image]
    upstream: character-api
    versions:
      v1:
        routes:
          - {{name: health, path: /health, methods: [GET], auth: bypass}}
          - {{name: catalog, path: /catalog/**, methods: [GET]}}
  scan:
    layer: business-logic
    owner: team-scan
    depends_on: [character, image]
    upstream: scan-api
    versions:
      v1:
        routes:
          - {{name: health, path: /health, methods: [GET], auth: bypass}}
          - {{name: scans, path: /scans, methods: [POST]}}
  chat:
    layer: business-logic
    owner: team-chat
    upstream: chat-api
    versions:
      v1:
        routes:
          - {{name: health, path: /health, methods: [GET], auth: bypass}}
upstreams:
  image-api: {{endpoints: [http://image.local:8000]}}
  character-api: {{endpoints: [http://character.local:8000]}}
  scan-api: {{endpoints: [http://scan.local:8000]}}
  chat-api: {{endpoints: [http://chat.local:8000]}}
"""


def with_mtls(config: dict, ca: MeshCA, server: Workload) -> dict:
    """The shipped bootstrap's listener, now requiring a client certificate from ``ca``."""
    chain = config["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(server.cert)},
                        "private_key": {"filename": str(server.key)},
                    }
                ],
                "validation_context": {"trusted_ca": {"filename": str(ca.cert)}},
            },
        },
    }
    return config


class MeshEdge:
    def __init__(self, tmp: Path, ca: MeshCA, authz_port: int, upstream: EchoServer):
        self.ca = ca
        self.port, self.admin_port = free_port(), free_port()
        config = render(
            EXT_AUTHZ_BOOTSTRAP,
            listen_port=self.port,
            admin_port=self.admin_port,
            clusters={
                "doma-authz": ("127.0.0.1", authz_port),
                "upstream": ("127.0.0.1", upstream.port),
            },
        )
        server = ca.issue("edge", dns="localhost")
        self.envoy = start_envoy(with_mtls(config, ca, server), tmp)
        wait_ready(self.envoy, self.admin_port)

    def call(self, workload: Workload | None, path: str, method: str = "GET") -> tuple[int, dict]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.ca.client_context(workload), timeout=10
        )
        try:
            connection.request(
                method, path, headers={"authorization": f"Bearer {KEY.token(sub='svc')}"}
            )
            response = connection.getresponse()
            body = response.read()
            return response.status, json.loads(body) if body else {}
        finally:
            connection.close()

    def close(self) -> None:
        self.envoy.terminate()
        self.envoy.wait(10)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> MeshCA:
    return MeshCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def upstream():
    server = EchoServer().start()
    yield server
    server.stop()


def start_authz(tmp: Path, mode: str) -> processes.ServerProcess:
    (tmp / "routes.yaml").write_text(routes_yaml(mode))
    server = processes.start(
        [
            *("authz", "--routes", str(tmp / "routes.yaml"), "--listen", "127.0.0.1:0"),
            *("--metrics", "127.0.0.1:0", "--no-admin"),
        ]
    )
    wait_serving(server.port("grpc"))
    return server


@pytest.fixture(scope="module", params=["enforce", "report"])
def mesh(request, tmp_path_factory, ca, upstream):
    authz = start_authz(tmp_path_factory.mktemp("authz"), request.param)
    edge = MeshEdge(tmp_path_factory.mktemp("envoy"), ca, authz.port("grpc"), upstream)
    yield request.param, edge, authz
    edge.close()
    authz.stop()


def violations(authz: processes.ServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{authz.port('metrics')}/metrics") as reply:
        text = reply.read().decode()
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith("doma_authz_inter_domain_violations_total{")
    )


def test_a_declared_call_down_the_layers_passes(mesh, ca):
    _, edge, _ = mesh
    status, seen = edge.call(ca.workload("scan", "scan-api"), "/api/v1/character/catalog/all")
    assert status == 200
    assert seen["path"] == "/api/v1/character/catalog/all"


def test_a_domain_calling_itself_passes(mesh, ca):
    _, edge, _ = mesh
    status, _ = edge.call(ca.workload("scan", "scan-api"), "/api/v1/scan/scans", method="POST")
    assert status == 200


def test_an_undeclared_call_is_denied_or_reported(mesh, ca):
    mode, edge, authz = mesh
    status, body = edge.call(ca.workload("chat", "chat-api"), "/api/v1/character/catalog/all")
    if mode == "enforce":
        assert (status, body["reason"]) == (403, "undeclared_dependency")
    else:
        assert status == 200
    action = "denied" if mode == "enforce" else "reported"
    expected = f'action="{action}",caller="chat",reason="undeclared_dependency",target="character"'
    assert expected in violations(authz)


def test_a_call_up_the_layers_is_a_layer_violation(mesh, ca):
    mode, edge, authz = mesh
    status, body = edge.call(ca.workload("image", "image-api"), "/api/v1/scan/scans", method="POST")
    if mode == "enforce":
        assert (status, body["reason"]) == (403, "layer_violation")
    else:
        assert status == 200
    action = "denied" if mode == "enforce" else "reported"
    expected = f'action="{action}",caller="image",reason="layer_violation",target="scan"'
    assert expected in violations(authz)


def test_a_bypassed_path_is_still_judged_by_the_layer_rule(mesh, ca):
    mode, edge, _ = mesh
    status, _ = edge.call(ca.workload("chat", "chat-api"), "/api/v1/image/health")
    assert status == (403 if mode == "enforce" else 200)


def test_a_certificate_from_another_meshs_ca_is_refused_by_envoy(mesh, tmp_path):
    _, edge, _ = mesh
    foreign = MeshCA(tmp_path, trust_domain="other.mesh")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        edge.call(foreign.workload("chat", "chat-api"), "/api/v1/character/catalog/all")


def test_a_client_without_a_certificate_is_refused_by_envoy(mesh):
    _, edge, _ = mesh
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        edge.call(None, "/api/v1/character/catalog/all")
