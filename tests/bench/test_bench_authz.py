"""The authz benchmark harness runs end to end in a short mode and reports verified numbers."""

from __future__ import annotations

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.e2e


def test_short_run_measures_envoy_alone_and_doma_authz_with_only_2xx() -> None:
    stdout, report = run_bench(
        "bench.authz", "--duration", "1", "--warmup", "0", "--rounds", "1", "--connections", "4",
        "--cases", "a,d", timeout=90,
    )  # fmt: skip
    envoy, doma = report["cases"]["a"], report["cases"]["d"]
    for case in (envoy, doma):
        assert "failed" not in case
        assert case["requests"] > 0
        assert case["non_2xx"] == 0
    # Every request went through our server, and a repeated token was verified once at most.
    assert doma["envoy_stats"]["http.edge.ext_authz.ok"] >= doma["requests"]
    assert doma["token_cache"]["miss"] == 0
    assert report["ratios"]["ours/(a) envoy alone"] > 0
    assert "(d) doma" in stdout
