"""The router in process: globs against a reference, order, versions, lifecycle (Hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.paths import normalize
from gateway.errors import MethodNotAllowed, RouteNotFound, VersionGone, VersionNotFound
from gateway.router import Router, version_headers
from gateway.routes_model import Domain, Rewrite, Route, RoutesConfig, Upstream, Version

SEGMENT = st.text(alphabet="abcxyz019-._~", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)
PATTERN_SEGMENT = st.one_of(SEGMENT, st.just("*"), st.just("**"))


def _config(routes: list[Route], **version: object) -> RoutesConfig:
    versions = (Version("v1", tuple(routes), **version), Version("v2", (Route("/**", "up"),)))  # type: ignore[arg-type]
    domain = Domain("scan", "product", "team", versions, default_version="v2")
    return RoutesConfig(("product",), (domain,), {"up": Upstream("up", ("http://u",))})


def _reference(pattern: list[str], path: list[str]) -> bool:
    """Segment-wise glob semantics: '*' is one segment, '**' any number (zero included)."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_reference(rest, path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    return (head == "*" or head == path[0]) and _reference(rest, path[1:])


@settings(max_examples=400, deadline=None)
@given(st.lists(PATTERN_SEGMENT, min_size=1, max_size=5), st.lists(SEGMENT, min_size=1, max_size=6))
def test_route_globs_match_exactly_like_the_reference(pattern: list[str], segments: list[str]):
    router = Router(_config([Route("/" + "/".join(pattern), "up")]))
    path = "/api/v1/scan/" + "/".join(segments)
    try:
        router.match("GET", path)
        matched = True
    except RouteNotFound:
        matched = False
    assert matched == _reference(pattern, segments)


@settings(max_examples=300, deadline=None)
@given(st.lists(SEGMENT, min_size=1, max_size=6), st.sampled_from(["", "?a=1", "?x=%2F&y"]))
def test_a_clean_path_is_forwarded_exactly_as_matched(segments: list[str], query: str):
    target = "/api/v1/scan/" + "/".join(segments) + query
    normalized = normalize(target)
    assert normalized.ambiguous is None and normalized.invalid is None
    match = Router(_config([Route("/**", "up")])).match("GET", normalized.path)
    assert match.upstream_path == normalized.path == target.partition("?")[0]
    assert normalize(match.upstream_path).path == match.upstream_path


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(SEGMENT, st.sampled_from([".", "..", "", "%2e%2e", "%2F", "a%5cb"])), max_size=6
    )
)
def test_a_path_that_normalization_changes_is_flagged_ambiguous(segments: list[str]):
    target = "/api/v1/scan/" + "/".join(segments)
    normalized = normalize(target)
    if normalized.invalid is None and normalized.ambiguous is None:
        # Only decoded unreserved escapes may differ; nothing that moves a segment boundary.
        assert normalized.path.count("/") == target.count("/")


@settings(max_examples=200, deadline=None)
@given(st.lists(SEGMENT, min_size=1, max_size=4))
def test_the_first_matching_route_wins(segments: list[str]):
    router = Router(
        _config([Route("/a/**", "up", name="first"), Route("/a/b", "up", name="second")])
    )
    match = router.match("GET", "/api/v1/scan/a/" + "/".join(segments))
    assert match.route.name == "first"


def test_wrong_method_is_405_listing_every_partially_matching_route():
    router = Router(
        _config([Route("/x", "up", frozenset({"GET"})), Route("/x", "up", frozenset({"POST"}))])
    )
    with pytest.raises(MethodNotAllowed) as caught:
        router.match("DELETE", "/api/v1/scan/x")
    assert caught.value.headers == (("allow", "GET, HEAD, POST"),)


def test_versions_by_path_header_and_default():
    router = Router(_config([Route("/x", "up", name="v1-route")]))
    assert router.match("GET", "/api/v1/scan/x").version.name == "v1"
    assert router.match("GET", "/api/scan/x", "v1").version.name == "v1"
    assert router.match("GET", "/api/scan/x").version.name == "v2"
    # A version in the path wins over the header.
    assert router.match("GET", "/api/v2/scan/x", "v1").version.name == "v2"
    with pytest.raises(VersionNotFound) as caught:
        router.match("GET", "/api/scan/x", "v3")
    assert caught.value.fields == {"version": "v3", "supported": ["v1", "v2"]}


def test_sunset_turns_a_version_into_410_at_that_moment():
    sunset = datetime(2030, 1, 1, tzinfo=UTC)
    config = _config([Route("/x", "up")], sunset=sunset)
    before = Router(config, clock=lambda: sunset.timestamp() - 1)
    after = Router(config, clock=lambda: sunset.timestamp())
    assert before.match("GET", "/api/v1/scan/x").response_headers == (
        (b"sunset", b"Tue, 01 Jan 2030 00:00:00 GMT"),
    )
    with pytest.raises(VersionGone):
        after.match("GET", "/api/v1/scan/x")


def test_deprecation_headers_follow_rfc_9745_and_8594():
    version = Version(
        "v1",
        (),
        deprecated=datetime(2026, 6, 1, tzinfo=UTC),
        sunset=datetime(2027, 6, 1, tzinfo=UTC),
        link="https://docs.example/v2",
    )
    assert dict(version_headers(version)) == {
        b"deprecation": b"@1780272000",
        b"sunset": b"Tue, 01 Jun 2027 00:00:00 GMT",
        b"link": b'<https://docs.example/v2>; rel="deprecation"; type="text/html", '
        b'<https://docs.example/v2>; rel="sunset"; type="text/html"',
    }


@pytest.mark.parametrize(
    ("rewrite", "path", "expected"),
    [
        (Rewrite(prefix=""), "/api/v1/scan/a/b", "/a/b"),
        (Rewrite(prefix=""), "/api/v1/scan", "/"),
        (Rewrite(prefix="/internal"), "/api/v1/scan/a", "/internal/a"),
        (Rewrite(path="/fixed"), "/api/v1/scan/a", "/fixed"),
        (None, "/api/v1/scan/a", "/api/v1/scan/a"),
    ],
)
def test_rewrite(rewrite: Rewrite | None, path: str, expected: str):
    router = Router(_config([Route("/**", "up", rewrite=rewrite)]))
    assert router.match("GET", path).upstream_path == expected
