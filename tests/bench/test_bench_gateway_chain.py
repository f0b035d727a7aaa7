"""The policy-chain case of the gateway benchmark: every request passes the whole chain (a
refused one would fail the harness, which accepts only 2xx) and the ratio to the bare gateway
is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_the_chain_case_runs_beside_the_bare_gateway_with_only_2xx(tmp_path: Path) -> None:
    output = tmp_path / "gateway.json"
    argv = [
        sys.executable, "-m", "bench.gateway", "--duration", "1", "--warmup", "0",
        "--rate", "200", "--rate-duration", "1", "--connections", "4",
        "--cases", "doma,doma-chain", "--rounds", "1", "--output", str(output),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(output.read_text())
    assert [row["case"] for row in report["throughput"]] == ["doma", "doma-chain"]
    assert all(row["requests"] > 0 for row in report["throughput"])
    assert report["ratios"]["chain_vs_bare"] > 0
    assert "target chain_vs_bare >= 0.85" in done.stdout
