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
    """Run ``python -m MODULE ARGS --output FILE`` in a short mode; its stdout and report.

    ``MODULE`` is ``bench`` (the suite, whose report is its summary) or ``bench.<harness>``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / f"{module.rpartition('.')[2]}.json"
        done = subprocess.run(
            [sys.executable, "-m", module, *args, "--output", str(output)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout, json.loads(output.read_text())
