"""The benchmark harnesses, run as a command in a short mode."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support.processes import ROOT


def run_bench(module: str, *args: str, timeout: float = 120) -> tuple[str, dict[str, Any]]:
    """Run ``python -m bench.MODULE ARGS --output FILE`` in a short mode; its stdout and report."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / f"{module}.json"
        done = subprocess.run(
            [sys.executable, "-m", f"bench.{module}", *args, "--output", str(output)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout, json.loads(output.read_text())
