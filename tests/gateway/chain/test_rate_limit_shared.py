"""Rate limits shared by two gateway processes through the real Redis, and what happens when
Redis goes away: the configured fallback, never a crash or a 500.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.chain.conftest import get, raw_request, shop_routes
from tests.gateway.conftest import StartGateway
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
