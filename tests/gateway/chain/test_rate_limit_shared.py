"""Rate limits shared by two gateway processes through the real Redis, and what happens when
Redis goes away: the configured fallback, never a crash or a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.policies.buckets import LocalBuckets
from gateway.policies.rate_limit_redis import RedisBuckets, SharedRedis
from tests.gateway.chain.conftest import get, raw_request, shop_routes
from tests.gateway.conftest import StartGateway
from tests.support.processes import run
from tests.support.services import PrivateRedis, unique_prefix
from tests.support.upstreams import ScriptedUpstream

PATH = "/api/v1/shop/items/1"


def _routes(upstream: str, store: str, prefix: str, extra: str = "") -> str:
    return shop_routes(
        upstream,
        domain="    auth: bypass\n",
        policies=f"""\
      - rate_limit:
          requests: 6
          period_seconds: 60
          limit_by: header
          header_name: x-api-key
          store: {store}
          key_prefix: {prefix}{extra}
""",
        routes="          - {name: items, path: /**}\n",
    )


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream("shared-limit") as server:
        yield server


def test_two_gateways_share_one_bucket_in_redis(
    start_gateway: StartGateway, upstream: ScriptedUpstream, redis_url: str
):
    text = _routes(upstream.url, redis_url, unique_prefix("ratelimit"))
    first = start_gateway(text, filename="a.yaml")
    second = start_gateway(text, filename="b.yaml")
    statuses = []
    for index in range(8):
        port = (first if index % 2 == 0 else second).port
        statuses.append(raw_request(port, get(PATH, "x-api-key: k1")).status)
    # Six requests per minute between both instances, not six each.
    assert statuses == [200] * 6 + [429] * 2
    refused = raw_request(second.port, get(PATH, "x-api-key: k1"))
    assert refused.json()["reason"] == "rate_limited"
    assert refused.header("ratelimit") is not None and refused.header("retry-after")
    # Another key has its own bucket, on either instance.
    assert raw_request(first.port, get(PATH, "x-api-key: k2")).status == 200


def test_redis_down_falls_back_to_local_limits_by_default(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    redis = PrivateRedis().start()
    try:
        gateway = start_gateway(_routes(upstream.url, redis.url, unique_prefix("fallback")))
        assert raw_request(gateway.port, get(PATH, "x-api-key: k")).status == 200
        redis.stop()
        statuses = [raw_request(gateway.port, get(PATH, "x-api-key: k")).status for _ in range(8)]
        # The local bucket (a full one: it never saw the first request) takes over.
        assert statuses == [200] * 6 + [429] * 2
    finally:
        redis.close()


@pytest.mark.parametrize(("mode", "status"), [("allow", 200), ("deny", 503)])
def test_redis_down_with_allow_or_deny(
    start_gateway: StartGateway, upstream: ScriptedUpstream, mode: str, status: int
):
    redis = PrivateRedis().start()
    redis.stop()
    try:
        gateway = start_gateway(
            _routes(
                upstream.url, redis.url, unique_prefix(mode), f"\n          on_store_error: {mode}"
            )
        )
        replies = [raw_request(gateway.port, get(PATH, "x-api-key: k")) for _ in range(8)]
        assert {r.status for r in replies} == {status}
        if status == 503:
            assert replies[0].json()["reason"] == "rate_limit_store_unavailable"
    finally:
        redis.close()


def test_a_client_ip_limit_keys_on_the_resolved_address_not_a_forged_one(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    gateway = start_gateway(
        "gateway:\n  trusted_proxies: [127.0.0.1/32]\n"
        + shop_routes(
            upstream.url,
            domain="    auth: bypass\n",
            policies="      - rate_limit: {requests: 2, period_seconds: 60, limit_by: client_ip}\n",
            routes="          - {name: items, path: /**}\n",
        )
    )

    def status(*headers: str, source: str = "127.0.0.1") -> int:
        return raw_request(gateway.port, get(PATH, *headers), source=source).status

    via_proxy = [status("x-forwarded-for: 10.0.0.1") for _ in range(3)]
    assert via_proxy == [200, 200, 429]
    assert status("x-forwarded-for: 10.0.0.2") == 200
    # From an untrusted peer every forged address is the same client: the peer.
    forged = [status(f"x-forwarded-for: 10.9.0.{n}", source="127.0.0.2") for n in range(3)]
    assert forged == [200, 200, 429]


def _fast_limit(upstream: str, store: str, requests: int) -> str:
    return shop_routes(
        upstream,
        domain="    auth: bypass\n",
        policies=f"""\
      - rate_limit:
          requests: {requests}
          period_seconds: 1
          burst: 1
          store: {store}
          key_prefix: {unique_prefix("fast")}
""",
        routes="          - {name: items, path: /**}\n",
    )


def test_a_rate_finer_than_a_microsecond_is_refused_and_the_finest_one_counts_in_redis(
    start_gateway: StartGateway, upstream: ScriptedUpstream, redis_url: str, tmp_path: Path
):
    routes = tmp_path / "fast.yaml"
    routes.write_text(_fast_limit(upstream.url, redis_url, 10_000_000))
    refused = run(["check", str(routes)])
    assert refused.returncode == 1
    assert f"{routes}:10:" in refused.stderr
    assert "more than one request per microsecond" in refused.stderr
    assert "at most 1000000 per 1 s" in refused.stderr
    gateway = start_gateway(_fast_limit(upstream.url, redis_url, 1_000_000))
    for _ in range(3):
        reply = raw_request(gateway.port, get(PATH))
        assert reply.status == 200
        # Redis and the local buckets agree: nothing left of a burst of one, full in a second.
        assert reply.header("ratelimit") == '"default";r=0;t=1'


async def test_redis_buckets_refuse_an_interval_they_would_round_to_nothing(redis_url: str):
    shared = SharedRedis(redis_url, 1.0)
    try:
        with pytest.raises(ValueError, match="microsecond"):
            RedisBuckets(shared, unique_prefix("tiny") + ":", 1e-7, 1e-7)
        finest = RedisBuckets(shared, unique_prefix("finest") + ":", 1e-6, 1e-6)
        verdict = await finest.take("k")
        assert verdict is not None
        assert (verdict.allowed, verdict.remaining) == (True, 0)
        assert LocalBuckets(1e-6, 1e-6).take("k")[:2] == (True, 0)
    finally:
        await shared.aclose()
