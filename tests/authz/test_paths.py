"""Path normalization: one normalized path, ambiguity flagged, never a crash."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.paths import RequestPath, normalize


def test_clean_path_is_unchanged_and_not_ambiguous():
    path = normalize("/api/v1/scan/results?page=2")
    assert (path.path, path.query, path.ambiguous, path.invalid) == (
        "/api/v1/scan/results",
        "page=2",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("target", "normalized", "reason"),
    [
        ("/public/../admin", "/admin", "dot_segment"),
        ("/public/%2e%2e/admin", "/admin", "dot_segment"),
        ("/public/%2E%2e/admin", "/admin", "dot_segment"),
        ("/public/..%2fadmin", "/public/..%2Fadmin", "encoded_slash"),
        ("/public/%252e%252e/admin", "/public/%252e%252e/admin", "double_encoding"),
        ("//admin", "/admin", "empty_segment"),
        ("/./admin", "/admin", "dot_segment"),
        ("/admin;x=1", "/admin;x=1", "path_parameter"),
        ("/public/..;/admin", "/public/..;/admin", "path_parameter"),
        ("/public%5c..%5cadmin", "/public%5C..%5Cadmin", "encoded_backslash"),
        ("/public\\..\\admin", "/public\\..\\admin", "backslash"),
        ("/admin#frag", "/admin", "fragment"),
        ("/a/b/..", "/a/", "dot_segment"),
        ("/public/%c0%ae%c0%ae/admin", "/public/%C0%AE%C0%AE/admin", "overlong_utf8"),
        ("/public/%e0%80%ae/admin", "/public/%E0%80%AE/admin", "overlong_utf8"),
        ("/public/%ed%a0%80", "/public/%ED%A0%80", "overlong_utf8"),
        ("/public/%f8%80%80%80%ae", "/public/%F8%80%80%80%AE", "overlong_utf8"),
        ("/api/v1/scan%3F/health", "/api/v1/scan%3F/health", "encoded_question_mark"),
        ("/api/v1/scan%23/health", "/api/v1/scan%23/health", "encoded_number_sign"),
    ],
)
def test_hostile_paths_are_flagged_ambiguous(target, normalized, reason):
    path = normalize(target)
    assert path.ambiguous == reason
    assert path.path == normalized
    assert path.invalid is None


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/admin%00", "bad_escape"),
        ("/admin\x00", "control_character"),
        ("/admin%zz", "bad_escape"),
        ("/admin%2", "bad_escape"),
        ("admin", "not_origin_form"),
        ("*", "not_origin_form"),
        ("/a b", "control_character"),
        ("/a?x=%00", "control_character"),
        ("/public/a%0D%0Ax-user-id:%20admin", "control_character"),
        ("/public/a%0a", "control_character"),
        ("/public/a%09b", "control_character"),
        ("/public/%01", "control_character"),
        ("/public/%1B[31m", "control_character"),
        ("/public/a%7F", "control_character"),
    ],
)
def test_invalid_targets_are_refused(target, reason):
    assert normalize(target).invalid == reason


def test_unreserved_escapes_are_decoded_and_hex_upper_cased():
    path = normalize("/api/%61dmin/a%20b%7e")
    assert path.path == "/api/admin/a%20b~"
    assert path.ambiguous is None


def test_query_is_not_part_of_the_path():
    path = normalize("/api/v1/scan?next=/api/v1/auth/kakao/callback")
    assert path.path == "/api/v1/scan"
    assert path.query == "next=/api/v1/auth/kakao/callback"


_segment = st.text(alphabet="ab.%/2eEfF5c;\\#?", min_size=0, max_size=30)


@given(st.builds(lambda s: "/" + s, _segment))
def test_normalized_paths_have_no_dot_or_empty_segments(target):
    path = normalize(target)
    if path.invalid is None:
        inner = path.path.split("/")[1:-1]
        assert "" not in inner and "." not in inner and ".." not in inner
        assert path.path.startswith("/")


@given(st.text(max_size=60))
def test_normalize_never_raises(target):
    normalize(target)


@given(st.builds(lambda s: "/" + s, _segment))
def test_normalizing_twice_changes_nothing(target):
    once = normalize(target)
    if once.invalid is None and once.ambiguous is None:
        again = normalize(once.path)
        assert again.path == once.path and again.ambiguous is None


@pytest.mark.parametrize("target", ["/caf%C3%A9", "/%E2%82%AC", "/%F0%9F%98%80", "/legacy/%E9"])
def test_utf8_and_single_byte_escapes_are_clean(target):
    assert normalize(target).ambiguous is None


def test_long_targets_are_normalized_alike_but_never_cached():
    from authz import paths

    long = "/a/" + "b" * 60_000 + "/../c?q=1"
    before = paths._cached.cache_info().currsize
    first, second = normalize(long), normalize(long)
    assert first == second == RequestPath("/a/c", "q=1", "dot_segment")
    assert paths._cached.cache_info().currsize == before
    assert normalize("/short") is normalize("/short")
