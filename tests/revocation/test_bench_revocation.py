"""``python -m bench.revocation`` runs end to end (a short run: it must not rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e


def test_a_short_benchmark_run_reports_propagation_and_check_cost(tmp_path, redis_url, amqp_url):
    output = tmp_path / "revocation.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.revocation",
            "--rounds",
            "5",
            "--seconds",
            "0.5",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "REDIS_URL": redis_url, "AMQP_URL": amqp_url},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert [row["bus"] for row in report["propagation"]] == ["amqp", "redis"]
    assert all(row["samples"] == 15 and row["p99_ms"] < 1000 for row in report["propagation"])
    variants = {row["variant"] for row in report["check_cost"]}
    assert "revocation, warm cache" in variants and len(report["grpc_check"]) == 2
    assert "revocation propagation over 3 instances" in done.stdout
