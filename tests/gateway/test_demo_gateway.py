"""The demo's edge gateway half: its printed curl commands do what the guide says."""

from __future__ import annotations

import re

import httpx

from tests.support.demo import running_demo


def test_demo_gateway_shows_routing_versions_deprecation_and_a_401():
    with running_demo() as demo:
        token = re.search(r"export TOKEN=(\S+)", demo.guide)
        assert token is not None, demo.guide
        auth = {"authorization": f"Bearer {token.group(1)}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{demo.gateway_port}", timeout=10) as client:
            routed = client.get("/api/v1/my/profile", headers={**auth, "x-user-id": "admin"})
            assert routed.json()["headers"]["x-user-id"] == "demo-user"
            assert (
                client.get("/api/scan/results/42", headers=auth).json()["path"] == "/v2/results/42"
            )
            by_header = client.get("/api/scan/results/42", headers={**auth, "API-Version": "v1"})
            # Forwarded exactly as matched: the version came from the header, not the path.
            assert by_header.json()["path"] == "/api/scan/results/42"
            assert "deprecation" in by_header.headers
            assert "deprecation" in client.get("/api/v1/scan/results/42", headers=auth).headers
            assert client.get("/api/v9/scan/results/42").json()["supported"] == ["v1", "v2"]
            assert client.get("/api/v1/my/profile").status_code == 401
            assert client.get("/api/v1/character/health").status_code == 200
        assert "stopped" in demo.stop()
        assert demo.process.returncode == 0
