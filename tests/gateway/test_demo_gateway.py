"""The demo's edge gateway half: its printed curl commands do what the guide says."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.support.processes import ROOT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_demo_gateway_shows_routing_versions_deprecation_and_a_401():
    port = _free_port()
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "doma_gateway.cli",
            "demo",
            "--port",
            str(_free_port()),
            "--gateway-port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # Its own process group, so a failed test can take the demo's gateway down with it.
        start_new_session=True,
    )
    try:
        assert demo.stdout is not None
        guide = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            guide.append(line)
            if "Ctrl-C stops everything" in line or not line:
                break
        text = "".join(guide)
        token = re.search(r"export TOKEN=(\S+)", text)
        assert token is not None, text
        auth = {"authorization": f"Bearer {token.group(1)}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
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
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=20)
        assert "stopped" in rest
        assert demo.returncode == 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()
