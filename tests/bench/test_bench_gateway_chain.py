"""The policy-chain case of the gateway benchmark: every request passes the whole chain (a
refused one would fail the harness, which accepts only 2xx) and the ratio to the bare gateway
is reported."""

from __future__ import annotations

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.e2e


def test_the_chain_case_runs_beside_the_bare_gateway_with_only_2xx() -> None:
    stdout, report = run_bench(
        "gateway", "--duration", "1", "--warmup", "0", "--rate", "200", "--rate-duration", "1",
        "--connections", "4", "--cases", "doma,doma-chain", "--rounds", "1",
    )  # fmt: skip
    assert [row["case"] for row in report["throughput"]] == ["doma", "doma-chain"]
    assert all(row["requests"] > 0 for row in report["throughput"])
    assert report["ratios"]["chain_vs_bare"] > 0
    assert "target chain_vs_bare >= 0.85" in stdout
