"""The demo's printed revocation walk-through works as printed (memory:// store and bus)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.support.demo import running_demo
from tests.support.http import send

pytestmark = pytest.mark.e2e


def test_the_demo_guide_revokes_the_demo_user_everywhere():
    with running_demo() as demo:
        token = re.search(r"export TOKEN=(\S+)", demo.guide).group(1)  # type: ignore[union-attr]
        admin_token = re.search(r"DOMA_ADMIN_TOKEN=(\S+)", demo.guide).group(1)  # type: ignore[union-attr]
        # The command exactly as printed, in a shell whose PATH does not hold the venv.
        command = re.search(r"^\s*(\S.* revoke --sub demo-user --admin \S+)$", demo.guide, re.M)
        assert command is not None, demo.guide
        bearer = [("authorization", f"Bearer {token}")]
        assert send(demo.port, "/api/v1/scan/results", bearer).status == 200

        done = subprocess.run(
            ["bash", "-c", command.group(1)],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"),
                 "DOMA_ADMIN_TOKEN": admin_token},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        reply = send(demo.port, "/api/v1/scan/results", bearer)
        assert (reply.status, reply.json()["reason"]) == (401, "token_revoked")
        demo.stop()
        assert demo.process.returncode == 0
