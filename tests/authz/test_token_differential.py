"""The verifier and PyJWT's ``decode`` agree on every token, except where the verifier is stricter.

PyJWT 2.x verified tokens before the verifier checked signatures and claims itself; it stays the
reference. Each case is a token and the key its kid names; both must accept it (with the same
claims) or both refuse it. Cases where the verifier refuses what PyJWT accepts are listed, with
why, in ``STRICTER_THAN_PYJWT``; for those, PyJWT must still accept, so the list stays true.
"""

import json
import time
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from authz.settings import ASYMMETRIC_ALGORITHMS
from authz.tokens import TokenError
from tests.authz.helpers import issuer
from tests.authz.signing import (
    ABSENT,
    KEY_NAMES,
    AlgorithmKey,
    claims,
    segment,
    signed,
    signing_key,
    token,
    verifier_for,
)

STRICTER_THAN_PYJWT = {
    "exp as a numeric string": "a NumericDate is a JSON number; PyJWT ran int() on strings",
    "nbf as a numeric string": "as above",
    "iat as a numeric string": "as above",
    "nbf as a boolean": "true is not a date; PyJWT read it as 1 (1970)",
    "iat as a boolean": "as above",
    "padded signature": "compact JWS segments are unpadded (RFC 7515 2); bearer_token agrees",
    "payload in UTF-16": "JOSE header and claims are UTF-8 JSON (RFC 7515 4, RFC 7519 7.2)",
    "payload with a UTF-8 byte order mark": "as above",
    "payload with an encoded lone surrogate": "not UTF-8; PyJWT decoded with surrogatepass",
}

Case = Callable[[], tuple[str, AlgorithmKey]]


def rs256(payload=None, **headers) -> tuple[str, AlgorithmKey]:
    return token(signing_key("RS256"), payload, **headers), signing_key("RS256")


def by_hand(payload, sign=None, **header) -> tuple[str, AlgorithmKey]:
    key = signing_key("RS256")

    def pkcs1(data: bytes) -> bytes:
        return key.private.sign(data, padding.PKCS1v15(), hashes.SHA256())

    fields = {"alg": "RS256", "kid": key.kid, **header}
    return signed({k: v for k, v in fields.items() if v is not ABSENT}, payload, sign or pkcs1), key


def with_signature_of(token_and_key, payload) -> tuple[str, AlgorithmKey]:
    """``payload`` under the header and signature of another token."""
    good, key = token_and_key
    header, _, signature = good.split(".")
    return f"{header}.{segment(payload)}.{signature}", key


def with_unused_bits_set(token_and_key) -> tuple[str, AlgorithmKey]:
    """The same signature bytes, spelled with a last character whose unused bits are not zero."""
    good, key = token_and_key
    # An RSA-2048 signature is 342 characters: the last one holds 2 bits of data and 4 unused.
    next_spelling = {"A": "B", "Q": "R", "g": "h", "w": "x"}
    return good[:-1] + next_spelling[good[-1]], key


def now() -> int:
    return int(time.time())


def _pss(salt_length):
    return lambda data: signing_key("PS256").private.sign(
        data, padding.PSS(padding.MGF1(hashes.SHA256()), salt_length), hashes.SHA256()
    )


def _ecdsa_der(data: bytes) -> bytes:
    return signing_key("ES256").private.sign(data, ec.ECDSA(hashes.SHA256()))


CASES: dict[str, Case] = {
    **{
        f"signed with {name}": lambda name=name: (token(signing_key(name)), signing_key(name))
        for name in KEY_NAMES
    },
    "tampered payload": lambda: with_signature_of(rs256(), claims(sub="admin")),
    "expired claims under a bad signature": lambda: with_signature_of(rs256(), claims(exp=1)),
    "another key under the kid": lambda: (
        token(signing_key("RS256", other=True), kid=signing_key("RS256").kid),
        signing_key("RS256"),
    ),
    "PSS signature presented as RS256": lambda: by_hand(claims(), _pss(32)),
    "PKCS1 signature presented as PS256": lambda: by_hand(claims(), alg="PS256"),
    "PSS without salt": lambda: by_hand(claims(), _pss(0), alg="PS256"),
    "PSS with the longest salt": lambda: by_hand(
        claims(), _pss(padding.PSS.MAX_LENGTH), alg="PS256"
    ),
    "ES256 signature in DER": lambda: (
        signed({"alg": "ES256", "kid": signing_key("ES256").kid}, claims(), _ecdsa_der),
        signing_key("ES256"),
    ),
    "alg none with a signature": lambda: by_hand(claims(), lambda data: b"sig", alg="none"),
    "alg HS256": lambda: by_hand(claims(), lambda data: b"x" * 32, alg="HS256"),
    "critical exp": lambda: rs256(crit=["exp"]),
    "critical b64 with its default": lambda: by_hand(claims(), crit=["b64"], b64=True),
    "unencoded payload": lambda: by_hand(claims(), crit=["b64"], b64=False),
    "padded signature": lambda: (rs256()[0] + "==", signing_key("RS256")),
    "signature with unused bits set": lambda: with_unused_bits_set(rs256()),
    "exp as a numeric string": lambda: rs256(claims(exp=str(now() + 600))),
    "exp as a boolean": lambda: rs256(claims(exp=True)),
    "exp as a float": lambda: rs256(claims(exp=now() + 600.5)),
    "exp as a float in the past": lambda: rs256(claims(exp=now() - 100.5)),
    "exp null": lambda: rs256(claims(exp=None)),
    "exp absent": lambda: rs256(claims(exp=ABSENT)),
    "exp beyond any float": lambda: rs256(claims(exp=10**400)),
    "exp just inside the leeway": lambda: rs256(claims(exp=now() - 25)),
    "exp just past the leeway": lambda: rs256(claims(exp=now() - 35)),
    "exp twice, the last one past": lambda: by_hand(
        json.dumps(claims())[:-1].encode() + b', "exp": 1}'
    ),
    "nbf in the future": lambda: rs256(claims(nbf=now() + 600)),
    "nbf as a float within the leeway": lambda: rs256(claims(nbf=now() + 20.5)),
    "nbf as a numeric string": lambda: rs256(claims(nbf=str(now()))),
    "nbf as a boolean": lambda: rs256(claims(nbf=True)),
    "iat in the future": lambda: rs256(claims(iat=now() + 600)),
    "iat absent": lambda: rs256(claims(iat=ABSENT)),
    "iat as a numeric string": lambda: rs256(claims(iat=str(now()))),
    "iat as a boolean": lambda: rs256(claims(iat=False)),
    "iat null": lambda: rs256(claims(iat=None)),
    "aud list with ours": lambda: rs256(claims(aud=["other-api", "doma-api"])),
    "aud list without ours": lambda: rs256(claims(aud=["other-api"])),
    "aud list with a number": lambda: rs256(claims(aud=["doma-api", 1])),
    "aud another string": lambda: rs256(claims(aud="other-api")),
    "aud absent": lambda: rs256(claims(aud=ABSENT)),
    "aud empty list": lambda: rs256(claims(aud=[])),
    "aud an object": lambda: rs256(claims(aud={"doma-api": True})),
    "iss another issuer": lambda: rs256(claims(iss="https://other.test")),
    "sub a number": lambda: rs256(claims(sub=7)),
    "jti a list": lambda: rs256(claims(jti=["a"])),
    "payload in UTF-16": lambda: by_hand(json.dumps(claims()).encode("utf-16")),
    "payload with a UTF-8 byte order mark": lambda: by_hand(
        b"\xef\xbb\xbf" + json.dumps(claims()).encode()
    ),
    "payload with an encoded lone surrogate": lambda: by_hand(
        json.dumps(claims(sub="x"), ensure_ascii=False).encode().replace(b'"x"', b'"\xed\xa0\x80"')
    ),
}


def pyjwt_claims(token: str, key: AlgorithmKey, settings) -> dict | None:
    try:
        return jwt.PyJWT().decode(
            token,
            key.public,
            algorithms=list(settings.algorithms),
            audience=list(settings.audiences),
            issuer=settings.issuer,
            leeway=settings.leeway,
            options={"require": list(settings.required_claims), "strict_aud": False},
        )
    except jwt.PyJWTError:
        return None


def test_every_deliberate_difference_has_a_case():
    assert set(STRICTER_THAN_PYJWT) <= set(CASES)


@pytest.mark.parametrize("name", list(CASES))
async def test_verifier_agrees_with_pyjwt(name):
    token, key = CASES[name]()
    verifier = await verifier_for(*(signing_key(n) for n in KEY_NAMES))
    # The issuer verifier_for configures: every asymmetric algorithm, the default claims policy.
    settings = issuer(algorithms=ASYMMETRIC_ALGORITHMS)
    try:
        ours = dict((await verifier.verify(token)).claims)
    except TokenError:
        ours = None
    reference = pyjwt_claims(token, key, settings)
    if name in STRICTER_THAN_PYJWT:
        assert reference is not None, "PyJWT refuses this too: drop it from STRICTER_THAN_PYJWT"
        assert ours is None
    else:
        assert ours == reference
