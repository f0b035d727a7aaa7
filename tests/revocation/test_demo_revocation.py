"""The demo's printed revocation walk-through works as printed (memory:// store and bus)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.support.http import send
from tests.support.processes import ROOT
from tests.support.services import free_port

pytestmark = pytest.mark.e2e


def test_the_demo_guide_revokes_the_demo_user_everywhere():
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
        assert demo.stdout is not None
        guide = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            assert line, "demo exited before printing its guide"
            guide.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(guide)
        token = re.search(r"export TOKEN=(\S+)", text).group(1)  # type: ignore[union-attr]
        admin_token = re.search(r"DOMA_ADMIN_TOKEN=(\S+)", text).group(1)  # type: ignore[union-attr]
        api = re.search(r"revoke --sub demo-user --admin (\S+)", text).group(1)  # type: ignore[union-attr]
        bearer = [("authorization", f"Bearer {token}")]
        assert send(port, "/api/v1/scan/results", bearer).status == 200

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
        reply = send(port, "/api/v1/scan/results", bearer)
        assert (reply.status, reply.json()["reason"]) == (401, "token_revoked")
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(15) == 0
        if demo.stdout is not None:
            demo.stdout.close()
