"""``python -m bench`` (``make bench``) in its quick mode: every case runs, every target is read."""

from __future__ import annotations

import pytest

from bench.suite import AUTHZ_CASES
from bench.targets import TARGETS
from tests.support.bench import run_bench

pytestmark = pytest.mark.e2e


def test_quick_suite_reports_every_target_with_a_number_in_its_summary_and_its_table() -> None:
    stdout, summary = run_bench("bench", "--quick", timeout=150)
    assert summary["failed"] == []
    assert [row["target"] for row in summary["targets"]] == [target.name for target in TARGETS]
    for row in summary["targets"]:
        assert isinstance(row["value"], float), row
        assert row["met"] in (True, False), row
        assert row["target"] in stdout
    cases = [row["case"] for row in summary["cases"]]
    assert sum(case.startswith("authz (") for case in cases) == len(AUTHZ_CASES.split(","))
    assert "authz (j) doma-fresh-http" in cases
    assert {"gateway doma", "gateway doma-chain", "gateway naive"} <= set(cases)
    assert sum(case.startswith("revocation via") for case in cases) == 2
    assert all(row["rps"] or row["p99_ms"] for row in summary["cases"])
    for case in cases:
        assert case in stdout
    machine = summary["machine"]
    assert machine["cpus"] >= 1
    assert machine["envoy"] != "unknown"
    assert {"grpcio", "uvloop", "python", "cpu_model", "load_average_before"} <= machine.keys()
    assert "elapsed:" in stdout
