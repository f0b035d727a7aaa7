"""The gateway benchmark harness runs end to end in a short mode and reports its numbers."""

from __future__ import annotations

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.e2e


def test_short_run_measures_direct_envoy_and_the_gateway_with_only_2xx() -> None:
    stdout, report = run_bench(
        "bench.gateway", "--duration", "1", "--warmup", "0", "--rate", "200",
        "--rate-duration", "1", "--connections", "4", "--cases", "direct,envoy,doma",
        "--rounds", "1",
    )  # fmt: skip
    assert [row["case"] for row in report["throughput"]] == ["direct", "envoy", "doma"]
    assert all(row["requests"] > 0 and row["rps"] > 0 for row in report["throughput"])
    assert [row["case"] for row in report["fixed_rate"]] == ["direct", "envoy", "doma"]
    assert report["ratios"]["doma_vs_envoy"] > 0
    assert report["p99_added_ms"] is not None
    assert report["p99_added_ms_envoy"] is not None
    assert "gateway bare route: doma / Envoy, same cores" in stdout


def test_chain_ablation_runs_each_variant_through_a_real_gateway() -> None:
    stdout, report = run_bench(
        "bench.chain_ablation", "--variants", "same,static-headers,full", "--rounds", "1",
        "--duration", "1",
    )  # fmt: skip
    lowest = report["lowest_us_per_request"]
    assert set(lowest) == {"same", "static-headers", "full"}
    assert all(us > 0 for us in lowest.values())
    assert {row["variant"] for row in report["rounds"]} == set(lowest)
    assert all(row["requests"] > 0 and "failed" not in row for row in report["rounds"])
    assert "over same" in stdout


def test_instructions_are_counted_per_request_by_callgrind() -> None:
    stdout, report = run_bench(
        "bench.instructions", "--variants", "same,cors", "--requests", "40", "--windows", "2",
        "--warmup", "20", timeout=300,
    )  # fmt: skip
    counted = report["instructions_per_request"]
    # A proxied request runs hundreds of thousands of instructions; CORS only adds to them.
    assert 100_000 < counted["same"] < counted["cors"]
    assert "same / cors: 0." in stdout
