"""The demo's printed revocation walk-through works as printed (memory:// store and bus)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.demo import running_demo
from tests.support.http import send
from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e


def test_the_demo_guide_revokes_the_demo_user_everywhere():
    with running_demo() as demo:
        token = re.search(r"export TOKEN=(\S+)", demo.guide).group(1)  # type: ignore[union-attr]
        admin_token = re.search(r"DOMA_ADMIN_TOKEN=(\S+)", demo.guide).group(1)  # type: ignore[union-attr]
        api = re.search(r"revoke --sub demo-user --admin (\S+)", demo.guide).group(1)  # type: ignore[union-attr]
        bearer = [("authorization", f"Bearer {token}")]
        assert send(demo.port, "/api/v1/scan/results", bearer).status == 200

        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "doma_gateway.cli",
                "revoke",
                "--sub",
                "demo-user",
                "--admin",
                api,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "DOMA_ADMIN_TOKEN": admin_token},
        )
        assert done.returncode == 0, done.stderr
        reply = send(demo.port, "/api/v1/scan/results", bearer)
        assert (reply.status, reply.json()["reason"]) == (401, "token_revoked")
        demo.stop()
        assert demo.process.returncode == 0
