"""`doma-gateway demo` (what `make run` starts) works as its printed guide says."""

import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support.http import send
from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_demo_prints_a_working_token_and_stops_cleanly_on_ctrl_c():
    port = free_port()
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "doma_gateway.cli",
            "demo",
            "--port",
            str(port),
            "--gateway-port",
            str(free_port()),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        guide = []
        deadline = time.monotonic() + 30
        assert demo.stdout is not None
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            assert line, "demo exited before printing its guide"
            guide.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(guide)
        token = re.search(r"export TOKEN=(\S+)", text).group(1)

        allowed = send(
            port,
            "/api/v1/scan/results",
            [("authorization", f"Bearer {token}"), ("x-user-id", "admin")],
        )
        assert allowed.status == 200 and allowed.json()["headers"]["x-user-id"] == "demo-user"
        assert send(port, "/api/v1/scan/results").json()["reason"] == "missing_token"
        expired = re.search(r"Bearer (\S+)\"\n\nBypass", text).group(1)
        assert (
            send(port, "/api/v1/scan/results", [("authorization", f"Bearer {expired}")]).json()[
                "reason"
            ]
            == "token_expired"
        )
        assert send(port, "/api/v1/scan/health").status == 200

        demo.send_signal(signal.SIGINT)
        assert demo.wait(15) == 0
        assert "stopped" in demo.stdout.read()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo.stdout.close()
