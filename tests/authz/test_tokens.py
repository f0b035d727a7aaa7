"""Token verification refuses every forged, stale or malformed token with a stable reason."""

import base64
import json
import time

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.check import CheckInput
from authz.tokens import TokenError, bearer_token
from tests.authz.helpers import build_core, issuer
from tests.support.tokens import SigningKey, jwks


async def reason_of(core, token):
    with pytest.raises(TokenError) as caught:
        await core.verifier.verify(token)
    return caught.value.reason


async def test_valid_token_is_verified_with_its_claims():
    core = await build_core()
    verified = await core.verifier.verify(core.key.token(sub="alice"))
    assert verified.claims["sub"] == "alice"


async def test_expired_token_is_refused():
    core = await build_core()
    assert await reason_of(core, core.key.token(exp=int(time.time()) - 120)) == "token_expired"


async def test_expiry_within_leeway_is_accepted():
    core = await build_core(issuer_settings=issuer(leeway=30.0))
    await core.verifier.verify(core.key.token(exp=int(time.time()) - 10))


async def test_token_not_yet_valid_is_refused():
    core = await build_core()
    assert (
        await reason_of(core, core.key.token(nbf=int(time.time()) + 600)) == "token_not_yet_valid"
    )


async def test_wrong_issuer_is_refused():
    core = await build_core()
    assert await reason_of(core, core.key.token(iss="https://evil.test")) == "unknown_issuer"


async def test_wrong_audience_is_refused():
    core = await build_core()
    assert await reason_of(core, core.key.token(aud="other-api")) == "invalid_audience"


async def test_missing_exp_is_refused():
    core = await build_core()
    assert await reason_of(core, core.key.token(exp=None)) == "missing_claim"


async def test_alg_none_is_refused():
    core = await build_core()
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "none", "kid": core.key.kid}).encode()
    ).rstrip(b"=")
    good = core.key.token()
    payload = good.split(".")[1]
    assert await reason_of(core, f"{header.decode()}.{payload}.") in (
        "malformed_token",
        "algorithm_not_allowed",
    )
    unsigned = jwt.encode({"iss": "https://issuer.test", "sub": "x"}, None, algorithm="none")
    assert await reason_of(core, unsigned + "x") in ("malformed_token", "algorithm_not_allowed")


async def test_hs256_signed_with_the_public_key_is_refused():
    """PyJWT CVE-2022-29217: the RSA public key must never be accepted as an HMAC secret."""
    core = await build_core()
    now = int(time.time())
    claims = {"iss": "https://issuer.test", "aud": "doma-api", "sub": "mallory", "exp": now + 600}
    header = {"alg": "HS256", "kid": core.key.kid, "typ": "JWT"}
    segments = [
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
        for part in (header, claims)
    ]
    import hashlib
    import hmac

    signing_input = b".".join(segments)
    signature = hmac.new(core.key.public_pem, signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
    assert await reason_of(core, forged) == "algorithm_not_allowed"


async def test_unknown_kid_is_refused():
    core = await build_core()
    other = SigningKey()
    assert await reason_of(core, other.token()) == "unknown_key"


async def test_signature_by_another_key_under_a_known_kid_is_refused():
    core = await build_core()
    impostor = SigningKey(kid=core.key.kid)
    assert await reason_of(core, impostor.token()) == "invalid_signature"


async def test_tampered_payload_is_refused():
    core = await build_core()
    header, payload, signature = core.key.token(sub="alice").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert await reason_of(core, f"{header}.{forged_payload}.{signature}") == "invalid_signature"


@pytest.mark.parametrize("kid_field", ["jku", "x5u"])
async def test_key_urls_in_the_token_are_never_fetched(kid_field):
    core = await build_core()
    token = core.key.token(
        headers={"kid": "attacker-kid", kid_field: "http://127.0.0.1:1/evil.json"}
    )
    calls = core.fetcher.calls
    assert await reason_of(core, token) == "unknown_key"
    # The only fetch allowed is the issuer's own configured source, not the token's URL.
    assert core.fetcher.calls - calls <= 1


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Bearer a.b.c,Bearer d.e.f", "multiple_authorization_headers"),
        ("Basic dXNlcjpwYXNz", "unsupported_authorization_scheme"),
        ("Bearer ", "missing_token"),
        ("Bearer " + "a" * 5000 + ".b.c", "token_too_large"),
        ("Bearer not-a-jwt", "malformed_token"),
        ("Bearer a.b.c.d", "malformed_token"),
    ],
)
def test_bearer_header_shapes_are_refused(header, reason):
    with pytest.raises(TokenError) as caught:
        bearer_token(header, 4096)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "token", ["a.b.c=", "a.b.c d", "a+b.c/d.e", "a.b.", ".b.c", "a..c", "a.b.c\x00", "a.b.ç"]
)
async def test_a_token_outside_the_base64url_alphabet_is_malformed_now_and_later(token):
    """bearer_token lets these through; verification refuses them, with or without I/O."""
    core = await build_core()
    check = CheckInput("GET", "/api/v1/scan/x", {"authorization": f"Bearer {token}"})
    now = core.authorizer.decide_now(check)
    later = await core.authorizer.decide(check)
    assert now is not None and now.reason == "malformed_token"
    assert later.reason == "malformed_token"


async def test_non_base64_segments_are_malformed():
    core = await build_core()
    assert await reason_of(core, "eyJ.eyJ.sig") == "malformed_token"
    assert await reason_of(core, "abc.def.ghi") == "malformed_token"


async def test_repeated_token_is_verified_once():
    core = await build_core()
    token = core.key.token()
    for _ in range(5):
        await core.verifier.verify(token)
    assert (core.verifier.cache_misses, core.verifier.cache_hits) == (1, 4)


async def test_a_rotated_key_is_fetched_and_the_token_read_once_per_step():
    core = await build_core()
    rotated = SigningKey()
    core.fetcher.document = jwks(core.key, rotated)
    core.clock[0] += 10  # past the refetch interval
    reads = []
    parse = core.verifier._parse

    def counted(token):
        reads.append(token)
        return parse(token)

    core.verifier._parse = counted  # type: ignore[method-assign]
    check = CheckInput("GET", "/api/v1/scan/x", {"authorization": f"Bearer {rotated.token()}"})
    # The kid is not loaded: decide_now reads the token, decide reads it again and fetches.
    assert core.authorizer.decide_now(check) is None
    assert (await core.authorizer.decide(check)).allowed
    assert len(reads) == 2
    assert (core.verifier.cache_misses, core.verifier.cache_hits) == (1, 0)


async def test_cached_token_is_not_used_past_its_expiry():
    core = await build_core()
    now = [time.time()]
    core.verifier._clock = lambda: now[0]
    token = core.key.token(exp=int(now[0]) + 600)
    await core.verifier.verify(token)
    await core.verifier.verify(token)
    assert (core.verifier.cache_misses, core.verifier.cache_hits) == (1, 1)
    now[0] += 600 + 30 + 1  # past exp plus leeway, on the cache's clock
    await core.verifier.verify(token)
    # The stale entry was dropped and the token verified afresh instead of served from cache.
    assert (core.verifier.cache_misses, core.verifier.cache_hits) == (2, 1)


async def test_a_cached_token_lasts_only_while_its_key_is_published():
    kept, pulled = SigningKey(), SigningKey()
    core = await build_core(kept, pulled)
    token, other = pulled.token(), kept.token()
    await core.verifier.verify(token)
    await core.verifier.verify(other)
    # A refresh with the same keys (a new key set object) keeps both cached verifications.
    await core.key_cache.refresh()
    await core.verifier.verify(token)
    await core.verifier.verify(other)
    assert (core.verifier.cache_misses, core.verifier.cache_hits) == (2, 2)
    core.fetcher.document = jwks(kept)
    await core.key_cache.refresh()
    with pytest.raises(TokenError, match="unknown_key"):
        await core.verifier.verify(token)
    await core.verifier.verify(other)
    assert core.verifier.cache_hits == 3


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_header_value_is_refused_cleanly_or_parsed(value):
    try:
        token = bearer_token(value, 4096)
    except TokenError as exc:
        assert exc.reason.islower()
    else:
        assert token.count(".") == 2


async def test_expiry_beyond_any_float_is_verified_and_cached_without_end():
    """JSON integers are unbounded; such an ``exp`` must not break the cache's expiry sum."""
    core = await build_core()
    verified = await core.verifier.verify(core.key.token(exp=10**400))
    assert verified.valid_until == float("inf")


@pytest.mark.parametrize(
    ("claim", "value", "reason"),
    [
        ("exp", str(int(time.time()) + 600), "malformed_token"),
        ("nbf", True, "malformed_token"),
        ("iat", str(int(time.time())), "invalid_issued_at"),
    ],
    ids=["exp-string", "nbf-true", "iat-string"],
)
async def test_time_claim_that_is_not_a_json_number_is_refused(claim, value, reason):
    """PyJWT read these with int() and let them pass; a NumericDate is a JSON number."""
    core = await build_core()
    assert await reason_of(core, core.key.token(**{claim: value})) == reason
