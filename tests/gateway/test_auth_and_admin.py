"""In-process auth on required routes, identity-header stripping, and the admin listener."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import Gateway, StartGateway
from tests.support.routes import scan_catch_all
from tests.support.tokens import AUTH_SECTION, SigningKey, jwks
from tests.support.upstreams import ScriptedUpstream

KEY = SigningKey()


def authed_routes(upstream: ScriptedUpstream) -> str:
    return f"""\
{AUTH_SECTION}
  claims_to_headers:
    sub: x-user-id
layers: [product]
domains:
  scan:
    layer: product
    owner: team-scan
    upstream: main
    versions:
      v1:
        routes:
          - {{name: health, path: /health, auth: bypass}}
          - {{name: results, path: /results/**}}
upstreams:
  main:
    endpoints: [{upstream.url}]
"""


@pytest.fixture
def authed(start_gateway: StartGateway, upstream: ScriptedUpstream, tmp_path: Path) -> Gateway:
    (tmp_path / "jwks.json").write_bytes(jwks(KEY))
    return start_gateway(authed_routes(upstream))


def test_a_required_route_without_a_token_is_401_and_never_reaches_the_upstream(
    authed: Gateway, upstream: ScriptedUpstream
):
    with authed.client() as client:
        reply = client.get("/api/v1/scan/results/1", headers={"x-request-id": "r-9"})
    assert reply.status_code == 401
    assert reply.json() == {"error": "unauthorized", "reason": "missing_token", "request_id": "r-9"}
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert sum(upstream.hits.values()) == 0


def test_a_valid_token_is_forwarded_with_the_identity_the_gateway_sets(authed: Gateway):
    token = KEY.token(sub="alice")
    with authed.client() as client:
        reply = client.get(
            "/api/v1/scan/results/1",
            headers={
                "authorization": f"Bearer {token}",
                "x-user-id": "mallory",
                "x_user_id": "mallory",
                "x-user_id": "mallory",
                "x_user-id": "mallory",
            },
        )
    assert reply.status_code == 200
    seen = reply.json()["headers"]
    assert seen["x-user-id"] == "alice"
    # No spelling a backend folds into x-user-id reaches it but the one the gateway set.
    assert [n for n in seen if n.replace("_", "-") == "x-user-id"] == ["x-user-id"]


def test_an_expired_token_is_401_token_expired(authed: Gateway):
    with authed.client() as client:
        reply = client.get(
            "/api/v1/scan/results/1", headers={"authorization": f"Bearer {KEY.token(exp=1)}"}
        )
    assert (reply.status_code, reply.json()["reason"]) == (401, "token_expired")


def test_identity_headers_are_stripped_on_bypassed_routes_too(authed: Gateway):
    with authed.client() as client:
        reply = client.get(
            "/api/v1/scan/health",
            headers={"x-user-id": "mallory", "X_User_Id": "m", "x-User_id": "m", "x_user-ID": "m"},
        )
    assert reply.status_code == 200
    seen = reply.json()["headers"]
    assert not [n for n in seen if n.replace("_", "-") == "x-user-id"]


def test_admin_listener_serves_health_readiness_metrics_and_routes(authed: Gateway):
    with authed.client() as client:
        client.get("/api/v1/scan/health")
    assert httpx.get(f"{authed.admin}/healthz").text == "ok\n"
    ready = httpx.get(f"{authed.admin}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = httpx.get(f"{authed.admin}/metrics").text
    assert (
        'doma_gateway_requests_total{domain="scan",route="health",status="200",version="v1"} 1.0'
        in metrics
    )
    assert "doma_gateway_request_duration_seconds_bucket" in metrics
    routes = httpx.get(f"{authed.admin}/admin/routes").json()
    (scan,) = routes["domains"]
    assert [r["path"] for r in scan["versions"][0]["routes"]] == [
        "/api/v1/scan/health",
        "/api/v1/scan/results/**",
    ]
    assert [r["auth"] for r in scan["versions"][0]["routes"]] == ["bypass", "required"]
    # The admin listener is not the gateway: the data port has no admin routes.
    with authed.client() as client:
        assert client.get("/admin/routes").status_code == 404


def test_the_gateway_runs_the_revocation_machinery_of_its_auth_section(
    start_gateway: StartGateway, upstream: ScriptedUpstream, tmp_path: Path
):
    (tmp_path / "jwks.json").write_bytes(jwks(KEY))
    gateway = start_gateway(
        f"""\
{AUTH_SECTION}
  revocation: {{store: 'memory://gateway', bus: 'memory://gateway'}}
"""
        + scan_catch_all(upstream.url)
    )
    with gateway.client() as client:
        reply = client.get("/api/v1/scan/x", headers={"authorization": f"Bearer {KEY.token()}"})
    assert reply.status_code == 200
    assert httpx.get(f"{gateway.admin}/readyz").json()["ready"] is True


def _replace(path: Path, text: str) -> None:
    staged = path.with_suffix(".tmp")
    staged.write_text(text)
    staged.replace(path)


def test_a_reload_applies_routes_and_says_a_changed_auth_section_needs_a_restart(
    authed: Gateway,
):
    token = KEY.token(sub="alice")
    text = authed.routes.read_text()
    _replace(
        authed.routes,
        text.replace("sub: x-user-id", "sub: x-subject").replace("/results/**", "/outcomes/**"),
    )
    notice = authed.process.wait_event("restart_needed")
    assert notice["section"] == "auth"
    assert "restart" in str(notice["reason"])
    authed.process.wait_event("reloaded")
    with authed.client(headers={"authorization": f"Bearer {token}"}) as client:
        # The routes changed now; the identity mapping stays the one the process started with.
        assert client.get("/api/v1/scan/results/1").status_code == 404
        seen = client.get("/api/v1/scan/outcomes/1").json()["headers"]
    assert seen["x-user-id"] == "alice"
    assert "x-subject" not in seen
    # A reload that leaves auth: as it is says nothing of a restart.
    _replace(authed.routes, text)
    authed.process.wait_event("reloaded")
    assert authed.process.stderr().count("restart_needed") == 1


def test_a_reload_with_a_broken_auth_section_is_rejected_with_its_line(authed: Gateway):
    text = authed.routes.read_text()
    _replace(authed.routes, text.replace("jwks_file: jwks.json", "jwks_file: missing.json"))
    event = authed.process.wait_event("reload_rejected")
    assert f"{authed.routes}:" in str(event["error"])
    assert "missing.json" in str(event["error"])
    with authed.client() as client:
        reply = client.get(
            "/api/v1/scan/results/1", headers={"authorization": f"Bearer {KEY.token()}"}
        )
    assert reply.status_code == 200


def test_with_workers_the_supervisor_checks_a_reloaded_auth_section_too(
    start_gateway: StartGateway, upstream: ScriptedUpstream, tmp_path: Path
):
    (tmp_path / "jwks.json").write_bytes(jwks(KEY))
    gateway = start_gateway(authed_routes(upstream), "--workers", "2")
    text = gateway.routes.read_text()
    _replace(gateway.routes, text.replace("jwks_file: jwks.json", "jwks_file: missing.json"))
    assert "missing.json" in str(gateway.process.wait_event("reload_rejected")["error"])
    _replace(gateway.routes, text.replace("sub: x-user-id", "sub: x-subject"))
    assert gateway.process.wait_event("restart_needed")["section"] == "auth"
    gateway.process.wait_event("reloaded")
