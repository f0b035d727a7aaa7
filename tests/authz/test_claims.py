"""Registered claims: PyJWT's checks and reasons, and no string or boolean passes for a date."""

import math

import pytest

from authz.claims import claims_deny_reason, numeric_date
from tests.authz.helpers import issuer
from tests.authz.signing import ABSENT
from tests.support.tokens import AUDIENCE, ISSUER

NOW = 1_700_000_000.25


def token_claims(**overrides):
    values = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": int(NOW),
        "exp": int(NOW) + 600,
        "jti": "token-1",
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not ABSENT}


def reason(leeway=30.0, required=("exp",), audiences=(AUDIENCE,), **overrides):
    settings = issuer(leeway=leeway, required_claims=required, audiences=audiences)
    return claims_deny_reason(token_claims(**overrides), settings, NOW)


def test_valid_claims_pass():
    assert reason() is None


@pytest.mark.parametrize(
    ("exp", "expected"),
    [
        (int(NOW) - 30, "token_expired"),  # exp <= now - leeway
        (int(NOW) - 29, None),
        (NOW - 29.0, None),
        # Whole seconds, as PyJWT's int(): ...970.1 is read as ...970, so it is past the leeway.
        (int(NOW) - 29.9, "token_expired"),
    ],
)
def test_expiry_leeway_edge(exp, expected):
    assert reason(exp=exp) == expected


def test_expiry_without_leeway():
    assert reason(leeway=0.0, exp=int(NOW) + 1) is None
    assert reason(leeway=0.0, exp=int(NOW)) == "token_expired"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize(
    ("offset", "expected"), [(30, None), (30.9, None), (31, "token_not_yet_valid")]
)
def test_not_before_and_issued_at_leeway_edge(claim, offset, expected):
    # now + leeway is NOW + 30 = ...030.25: a date of ...030 is within it, ...031 is not.
    assert reason(**{claim: int(NOW) + offset}) == expected


@pytest.mark.parametrize(
    ("claim", "value", "expected"),
    [
        # PyJWT read these with int() and accepted them; a date is a JSON number here.
        ("exp", str(int(NOW) + 600), "malformed_token"),
        ("exp", f" {int(NOW) + 600:_} ", "malformed_token"),
        ("exp", True, "malformed_token"),
        ("nbf", "0", "malformed_token"),
        ("nbf", True, "malformed_token"),
        ("nbf", False, "malformed_token"),
        ("iat", str(int(NOW)), "invalid_issued_at"),
        ("iat", False, "invalid_issued_at"),
        # PyJWT refused these too, with the same reasons.
        ("exp", None, "malformed_token"),
        ("exp", [int(NOW) + 600], "malformed_token"),
        ("exp", {"at": int(NOW) + 600}, "malformed_token"),
        ("exp", math.inf, "malformed_token"),
        ("exp", math.nan, "malformed_token"),
        ("nbf", None, "malformed_token"),
        ("nbf", "soon", "malformed_token"),
        ("iat", None, "invalid_issued_at"),
        ("iat", -math.inf, "invalid_issued_at"),
        ("iat", [], "invalid_issued_at"),
    ],
)
def test_time_claim_that_is_not_a_number_is_refused(claim, value, expected):
    assert reason(required=(), **{claim: value}) == expected


def test_numeric_date_reads_only_json_numbers():
    assert numeric_date(1_700_000_000) == 1_700_000_000
    assert numeric_date(1_700_000_000.9) == 1_700_000_000
    assert numeric_date(10**400) == 10**400
    for value in (True, False, "1700000000", None, math.inf, math.nan, [1], b"1"):
        assert numeric_date(value) is None


def test_far_future_expiry_beyond_any_float_is_valid():
    assert reason(exp=10**400) is None


@pytest.mark.parametrize(
    ("required", "overrides"),
    [
        (("exp",), {"exp": ABSENT}),
        (("exp",), {"exp": None}),
        (("exp", "sub"), {"sub": ABSENT}),
        (("exp", "jti"), {"jti": None}),
    ],
)
def test_required_claim_missing_or_null_is_refused(required, overrides):
    assert reason(required=required, **overrides) == "missing_claim"


def test_required_claims_are_checked_before_any_value():
    assert reason(required=("exp", "sub"), sub=ABSENT, iat="bad", exp=1) == "missing_claim"


def test_checks_run_in_pyjwt_order_iat_nbf_exp_iss_aud_sub_jti():
    everything_wrong = {
        "iat": "x",
        "nbf": "x",
        "exp": "x",
        "iss": "https://other.test",
        "aud": "other-api",
        "sub": 1,
        "jti": 1,
    }
    expected = [
        "invalid_issued_at",
        "malformed_token",
        "malformed_token",
        "invalid_issuer",
        "invalid_audience",
        "invalid_token",
        "invalid_token",
    ]
    valid = {**token_claims(), "nbf": int(NOW)}
    fixed = {}
    for claim, want in zip(everything_wrong, expected, strict=True):
        assert reason(required=(), **{**everything_wrong, **fixed}) == want
        fixed[claim] = valid[claim]
    assert reason(required=(), **fixed) is None


@pytest.mark.parametrize(
    ("aud", "expected"),
    [
        (AUDIENCE, None),
        ([AUDIENCE], None),
        (["other-api", AUDIENCE], None),
        (["other-api"], "invalid_audience"),
        ("other-api", "invalid_audience"),
        ([AUDIENCE, 1], "invalid_audience"),
        ([AUDIENCE, None], "invalid_audience"),
        ([[AUDIENCE]], "invalid_audience"),
        ({AUDIENCE: True}, "invalid_audience"),
        (5, "invalid_audience"),
        (True, "invalid_audience"),
        (ABSENT, "missing_claim"),
        (None, "missing_claim"),
        ("", "missing_claim"),
        ([], "missing_claim"),
        (0, "missing_claim"),
        (False, "missing_claim"),
    ],
)
def test_audience(aud, expected):
    assert reason(aud=aud) == expected


def test_any_configured_audience_is_enough():
    assert reason(audiences=("first-api", AUDIENCE), aud=[AUDIENCE]) is None
    assert reason(audiences=("first-api", AUDIENCE), aud="first-api") is None
    assert reason(audiences=("first-api", "second-api"), aud=AUDIENCE) == "invalid_audience"


@pytest.mark.parametrize(
    ("iss", "expected"),
    [("https://other.test", "invalid_issuer"), (7, "invalid_issuer"), (ABSENT, "missing_claim")],
)
def test_issuer_must_be_the_configured_one(iss, expected):
    assert reason(iss=iss) == expected


@pytest.mark.parametrize("claim", ["sub", "jti"])
@pytest.mark.parametrize("value", [7, None, ["user-1"], {"id": "user-1"}, True])
def test_subject_and_token_id_must_be_strings_when_present(claim, value):
    assert reason(**{claim: value}) == "invalid_token"
    assert reason(**{claim: ABSENT}) is None
