"""Bypass globs: '*' is one segment, '**' any number, case-sensitive, query ignored."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.bypass import BypassRules, validate_glob

SEED = BypassRules(
    ("/api/v1/auth/kakao/callback", "/api/v1/auth/.well-known/jwks.json", "/api/v1/*/health")
)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/auth/kakao/callback", "/api/v1/auth/.well-known/jwks.json", "/api/v1/scan/health"],
)
def test_seed_bypass_paths_match(path):
    assert SEED.matches(path)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/scan/x/health",  # '*' is exactly one segment
        "/api/v1//health",
        "/api/v1/health",
        "/api/v1/scan/health/",
        "/api/v1/scan/HEALTH",  # case-sensitive
        "/API/v1/scan/health",
        "/api/v1/auth/kakao/callback/extra",
        "/api/v1/auth/kakao/callbackx",
        "/api/v1/auth/.well-known/jwksXjson",  # '.' is literal
    ],
)
def test_near_misses_do_not_match(path):
    assert not SEED.matches(path)


def test_double_star_matches_any_number_of_segments_including_none():
    rules = BypassRules(("/static/**",))
    assert rules.matches("/static")
    assert rules.matches("/static/a")
    assert rules.matches("/static/a/b/c")
    assert not rules.matches("/staticx/a")


def test_double_star_in_the_middle():
    rules = BypassRules(("/a/**/z",))
    assert rules.matches("/a/z") and rules.matches("/a/b/c/z")
    assert not rules.matches("/a/b/c")


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("api/x", "start with '/'"),
        ("/api/*x", "must stand alone"),
        ("/api/x?y=1", "query"),
        ("/api/../x", "dot segments"),
        ("/api/x y", "characters"),
    ],
)
def test_invalid_globs_are_explained(pattern, problem):
    assert problem in (validate_glob(pattern) or "")


_seg = st.text(alphabet="abcXYZ.-_~", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))


@given(st.lists(_seg, min_size=1, max_size=5), st.lists(_seg, min_size=0, max_size=5))
def test_single_star_matches_exactly_one_segment(prefix, extra):
    rules = BypassRules(("/" + "/".join([*prefix, "*"]),))
    base = "/" + "/".join(prefix)
    assert rules.matches(base + "/one")
    assert not rules.matches(base)
    if extra:
        assert not rules.matches(base + "/one/" + "/".join(extra))


@given(st.lists(_seg, min_size=1, max_size=6))
def test_literal_glob_matches_only_itself(segments):
    path = "/" + "/".join(segments)
    rules = BypassRules((path,))
    assert rules.matches(path)
    assert not rules.matches(path + "/x")
    assert not rules.matches(path.swapcase()) or path.swapcase() == path
    assert not rules.matches(re.sub(r"^/", "//", path))
