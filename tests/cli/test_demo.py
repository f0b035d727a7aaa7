"""`doma-gateway demo` (what `make run` starts): the Envoy half works as its printed guide says."""

import re

import pytest

from tests.support.demo import running_demo
from tests.support.http import send

pytestmark = pytest.mark.e2e


def test_demo_prints_a_working_token_and_stops_cleanly_on_ctrl_c():
    with running_demo() as demo:
        token = re.search(r"export TOKEN=(\S+)", demo.guide).group(1)
        bearer = [("authorization", f"Bearer {token}")]
        allowed = send(demo.port, "/api/v1/scan/results", [*bearer, ("x-user-id", "admin")])
        assert allowed.status == 200 and allowed.json()["headers"]["x-user-id"] == "demo-user"
        assert send(demo.port, "/api/v1/scan/results").json()["reason"] == "missing_token"
        expired = re.search(r"Bearer (\S+)\"\n\nBypass", demo.guide).group(1)
        reply = send(demo.port, "/api/v1/scan/results", [("authorization", f"Bearer {expired}")])
        assert reply.json()["reason"] == "token_expired"
        assert send(demo.port, "/api/v1/scan/health").status == 200
        assert "stopped" in demo.stop()
        assert demo.process.returncode == 0


@pytest.mark.parametrize("flag", ["--port", "--gateway-port"])
def test_a_busy_port_is_one_line_that_names_the_flag(flag):
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "doma_gateway.cli", "demo", flag, str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: port {port} is in use; choose another with {flag}"
