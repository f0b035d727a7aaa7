"""Routing through a real gateway process: domains, versions, lifecycle headers, order, rewrite."""

from __future__ import annotations

from tests.gateway.conftest import Gateway
from tests.support.http import send
from tests.support.upstreams import ScriptedUpstream


def test_path_version_routes_to_the_domain_and_forwards_the_matched_path(gateway: Gateway):
    with gateway.client() as client:
        reply = client.get("/api/v1/scan/results/42?page=2")
    assert reply.status_code == 200
    assert reply.json()["path"] == "/api/v1/scan/results/42?page=2"


def test_header_version_and_domain_default_version(gateway: Gateway):
    with gateway.client() as client:
        by_header = client.get("/api/scan/results/1", headers={"Accept-Version": "v1"})
        by_api_version = client.get("/api/scan/results/1", headers={"API-Version": "v1"})
        by_default = client.get("/api/scan/items/1")
    assert by_header.status_code == 200 and by_header.headers["deprecation"]
    assert by_api_version.status_code == 200
    # No version anywhere: the domain's default (v2) answers, and v2 is not deprecated.
    assert by_default.status_code == 200 and "deprecation" not in by_default.headers


def test_unknown_version_is_404_listing_the_supported_ones(gateway: Gateway):
    with gateway.client() as client:
        reply = client.get("/api/v9/scan/results/1")
        by_header = client.get("/api/scan/results/1", headers={"API-Version": "v7"})
    assert reply.status_code == 404
    body = reply.json()
    assert body["reason"] == "unknown_version"
    assert body["supported"] == ["v0", "v1", "v2"]
    assert body["request_id"] == reply.headers["x-request-id"]
    assert by_header.status_code == 404 and by_header.json()["version"] == "v7"


def test_deprecated_version_carries_deprecation_sunset_and_link(gateway: Gateway):
    with gateway.client() as client:
        reply = client.get("/api/v1/scan/results/1")
    assert reply.status_code == 200
    # RFC 9745: an sf-date (@ and seconds since the epoch); RFC 8594: an HTTP-date.
    assert reply.headers["deprecation"] == "@1767225600"
    assert reply.headers["sunset"] == "Thu, 01 Jan 2099 00:00:00 GMT"
    assert '<https://docs.example/scan/v2>; rel="deprecation"' in reply.headers["link"]
    assert 'rel="sunset"' in reply.headers["link"]


def test_version_past_its_sunset_is_gone(gateway: Gateway, shared_upstream: ScriptedUpstream):
    before = sum(shared_upstream.hits.values())
    with gateway.client() as client:
        reply = client.get("/api/v0/scan/anything")
    assert reply.status_code == 410
    assert reply.json()["reason"] == "version_sunset"
    assert reply.headers["sunset"] == "Wed, 01 Jan 2020 00:00:00 GMT"
    assert sum(shared_upstream.hits.values()) == before


def test_wrong_method_is_405_with_allow(gateway: Gateway):
    with gateway.client() as client:
        reply = client.delete("/api/v1/scan/results/1")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "GET, HEAD"
    assert reply.json()["allow"] == ["GET", "HEAD"]


def test_405_only_when_no_later_route_matches_fully(gateway: Gateway):
    with gateway.client() as client:
        # /items/* allows GET only, but the catch-all after it takes POST.
        reply = client.post("/api/v2/scan/items/1", content=b"{}")
    assert reply.status_code == 200
    assert reply.json()["path"] == "/items/1"


def test_first_matching_route_wins(gateway: Gateway):
    with gateway.client() as client:
        reply = client.get("/api/v2/scan/order/b")
    assert reply.json()["path"] == "/first/order/b"


def test_rewrite_replaces_the_domain_prefix_or_the_whole_path(gateway: Gateway):
    with gateway.client() as client:
        stripped = client.get("/api/v1/image/pictures/7?size=large")
        fixed = client.get("/api/v2/scan/fixed?x=1")
    assert stripped.json()["path"] == "/pictures/7?size=large"
    assert fixed.json()["path"] == "/somewhere/else?x=1"


def test_unknown_domain_and_paths_outside_api_are_404(
    gateway: Gateway, shared_upstream: ScriptedUpstream
):
    before = sum(shared_upstream.hits.values())
    with gateway.client() as client:
        assert client.get("/api/v1/payments/x").json()["reason"] == "unknown_domain"
        assert client.get("/internal/admin").json()["reason"] == "route_not_found"
    assert sum(shared_upstream.hits.values()) == before


def test_ambiguous_and_invalid_paths_are_refused_before_routing(
    gateway: Gateway, shared_upstream: ScriptedUpstream
):
    before = sum(shared_upstream.hits.values())
    for path in (
        "/api/v1/scan/results/..%2f..%2fadmin",
        "/api/v1/scan/results/%2e%2e/x",
        "/api/v1/scan/results/../../image/x",
        "/api/v1//scan/results/1",
        "/api/v1/scan/results/1;x=1",
        "/api/v1/scan/results%5c..%5cadmin",
        "/api/v1/scan/results/%252e",
    ):
        reply = send(gateway.port, path)
        assert reply.status == 400, path
        assert reply.json()["reason"] == "ambiguous_path", path
    for path in (
        "/api/v1/scan/results/%zz",
        "/api/v1/scan/results/a%0D%0Ax-user-id:%20admin",
        "/api/v1/scan/results/%09",
        "/api/v1/scan/results/%1B",
        "/api/v1/scan/results/%7F",
    ):
        reply = send(gateway.port, path)
        assert (reply.status, reply.json()["reason"]) == (400, "invalid_path"), path
    assert sum(shared_upstream.hits.values()) == before


def test_upstream_receives_exactly_the_matched_path(gateway: Gateway):
    # %3A stays %3A (a general-purpose client would re-quote it to ':'); %7E is decoded
    # once by normalization, and that normalized path is the one routed and forwarded.
    reply = send(gateway.port, "/api/v1/scan/results/a%3Ab/%7Euser/caf%C3%A9")
    assert reply.json()["path"] == "/api/v1/scan/results/a%3Ab/~user/caf%C3%A9"


def test_head_is_answered_by_get_routes(gateway: Gateway):
    with gateway.client() as client:
        reply = client.head("/api/v1/scan/results/1")
    assert reply.status_code == 200
    assert reply.content == b""
