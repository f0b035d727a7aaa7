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
