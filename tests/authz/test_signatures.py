"""Signatures: every allowed algorithm verifies its own, and nothing else passes for one."""

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authz.settings import ASYMMETRIC_ALGORITHMS
from authz.signatures import SIGNATURE_ALGORITHMS
from tests.authz.signing import (
    ABSENT,
    KEY_NAMES,
    claims,
    outcome,
    segment,
    signed,
    signing_key,
    token,
    verifier_for,
)


def every_key():
    return [signing_key(name) for name in KEY_NAMES]


def test_signature_algorithms_are_exactly_the_allowed_asymmetric_ones():
    assert set(SIGNATURE_ALGORITHMS) == set(ASYMMETRIC_ALGORITHMS)
    assert not {"none", "HS256", "HS384", "HS512"} & set(SIGNATURE_ALGORITHMS)


@pytest.mark.parametrize("name", KEY_NAMES)
async def test_every_allowed_algorithm_verifies_its_own_signature(name):
    key = signing_key(name)
    verifier = await verifier_for(*every_key())
    verified = await verifier.verify(token(key, claims(sub=f"signed-with-{name}")))
    assert verified.claims["sub"] == f"signed-with-{name}"


@pytest.mark.parametrize("name", KEY_NAMES)
async def test_tampered_payload_is_refused_for_every_algorithm(name):
    verifier = await verifier_for(*every_key())
    header, _, signature = token(signing_key(name)).split(".")
    forged = f"{header}.{segment(claims(sub='admin'))}.{signature}"
    assert await outcome(verifier, forged) == "invalid_signature"


@pytest.mark.parametrize("name", KEY_NAMES)
async def test_signature_by_another_key_of_the_same_kind_is_refused(name):
    key, impostor = signing_key(name), signing_key(name, other=True)
    verifier = await verifier_for(*every_key())
    assert await outcome(verifier, token(impostor, kid=key.kid)) == "invalid_signature"


@pytest.mark.parametrize(
    ("algorithm", "signer", "key_of_kid"),
    [
        ("RS256", "RS256", "ES256"),
        ("PS256", "PS256", "EdDSA-Ed25519"),
        ("ES256", "ES256", "RS256"),
        ("ES256", "ES256", "ES384"),
        ("ES384", "ES384", "ES256"),
        ("ES512", "ES512", "ES384"),
        ("EdDSA", "EdDSA-Ed25519", "RS256"),
        ("EdDSA", "EdDSA-Ed448", "ES256"),
    ],
)
async def test_key_of_another_type_than_the_algorithm_is_never_used(algorithm, signer, key_of_kid):
    """An EC key for RS256, an RSA key for ES256, a P-384 key for ES256: no key at all."""
    verifier = await verifier_for(*every_key())
    forged = token(signing_key(signer), kid=signing_key(key_of_kid).kid)
    assert json.loads(b64_decode(forged.split(".")[0]))["alg"] == algorithm
    assert await outcome(verifier, forged) == "unknown_key"


async def test_token_without_kid_skips_keys_of_other_types_and_uses_the_first_that_verifies():
    rsa_key, p256, p384 = signing_key("RS256"), signing_key("ES256"), signing_key("ES384")
    verifier = await verifier_for(
        p256, p384, signing_key("RS256", other=True), rsa_key, named=False
    )
    assert (await verifier.verify(token(rsa_key, kid=ABSENT))).claims["iss"]
    assert (await verifier.verify(token(p256, kid=ABSENT))).claims["iss"]
    assert await outcome(verifier, token(signing_key("ES512"), kid=ABSENT)) == "unknown_key"


def pss(hash_algorithm, salt_length, mgf_hash=None):
    mgf = padding.MGF1(mgf_hash or hash_algorithm)
    return lambda data: signing_key("PS256").private.sign(
        data, padding.PSS(mgf, salt_length), hash_algorithm
    )


def pkcs1(hash_algorithm):
    return lambda data: signing_key("RS256").private.sign(data, padding.PKCS1v15(), hash_algorithm)


@pytest.mark.parametrize(
    ("algorithm", "sign", "expected"),
    [
        ("PS256", pss(hashes.SHA256(), 32), "ok"),
        ("PS384", pss(hashes.SHA384(), 48), "ok"),
        ("PS512", pss(hashes.SHA512(), 64), "ok"),
        ("RS256", pkcs1(hashes.SHA256()), "ok"),
        ("RS256", pss(hashes.SHA256(), 32), "invalid_signature"),
        ("PS256", pkcs1(hashes.SHA256()), "invalid_signature"),
        ("RS384", pkcs1(hashes.SHA256()), "invalid_signature"),
        ("PS256", pss(hashes.SHA384(), 32), "invalid_signature"),
        # RFC 7518 3.5: the salt is as long as the hash, and MGF1 uses the same hash.
        ("PS256", pss(hashes.SHA256(), 0), "invalid_signature"),
        ("PS256", pss(hashes.SHA256(), padding.PSS.MAX_LENGTH), "invalid_signature"),
        ("PS256", pss(hashes.SHA256(), 32, hashes.SHA1()), "invalid_signature"),  # noqa: S303
    ],
)
async def test_rsa_signature_must_use_the_padding_and_hash_its_algorithm_names(
    algorithm, sign, expected
):
    verifier = await verifier_for(signing_key("RS256"))
    forged = signed({"alg": algorithm, "kid": signing_key("RS256").kid}, claims(), sign)
    assert await outcome(verifier, forged) == expected


def raw_ecdsa(name, shape):
    key = signing_key(name)
    half = (key.private.curve.key_size + 7) // 8
    hash_algorithm = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384()}.get(name, hashes.SHA512())

    def sign(data):
        der = key.private.sign(data, ec.ECDSA(hash_algorithm))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(half, "big") + s.to_bytes(half, "big")
        return {
            "raw": raw,
            "der": der,
            "short": raw[:-1],
            "long": raw + b"\x00",
            "wide": b"\x00" + raw[:half] + b"\x00" + raw[half:],
        }[shape]

    return sign


@pytest.mark.parametrize("name", ["ES256", "ES384", "ES512"])
@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("raw", "ok"),
        ("der", "invalid_signature"),
        ("short", "invalid_signature"),
        ("long", "invalid_signature"),
        ("wide", "invalid_signature"),
    ],
)
async def test_ecdsa_signature_must_be_r_and_s_of_exactly_the_curve_size(name, shape, expected):
    key = signing_key(name)
    verifier = await verifier_for(key)
    forged = signed({"alg": key.algorithm, "kid": key.kid}, claims(), raw_ecdsa(name, shape))
    assert await outcome(verifier, forged) == expected


async def test_ed25519_signature_does_not_pass_for_an_ed448_key():
    ed25519_key, ed448_key = signing_key("EdDSA-Ed25519"), signing_key("EdDSA-Ed448")
    verifier = await verifier_for(ed25519_key, ed448_key)
    assert await outcome(verifier, token(ed25519_key, kid=ed448_key.kid)) == "invalid_signature"


async def test_hmac_signed_with_the_public_key_is_refused_whatever_is_allowed():
    """PyJWT CVE-2022-29217: a public key must never double as an HMAC secret."""
    key = signing_key("RS256")
    verifier = await verifier_for(*every_key())
    pem = key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, json.dumps(key.jwk).encode()):
        forged = signed(
            {"alg": "HS256", "kid": key.kid},
            claims(),
            lambda data, secret=secret: hmac.new(secret, data, hashlib.sha256).digest(),
        )
        assert await outcome(verifier, forged) == "algorithm_not_allowed"


@pytest.mark.parametrize(
    "algorithm",
    ["none", "None", "NONE", "", None, ABSENT, ["RS256"]],
    ids=["none", "None", "NONE", "empty", "null", "absent", "list"],
)
async def test_unsigned_or_odd_alg_is_refused(algorithm):
    key = signing_key("RS256")
    verifier = await verifier_for(*every_key())
    header = {"alg": algorithm, "kid": key.kid}
    header = {name: value for name, value in header.items() if value is not ABSENT}
    unsigned = f"{segment(header)}.{segment(claims())}"
    # An empty signature segment is no compact JWS at all.
    assert await outcome(verifier, unsigned + ".") == "malformed_token"
    assert await outcome(verifier, unsigned + ".c2ln") == "algorithm_not_allowed"


async def test_algorithm_the_issuer_does_not_allow_is_refused_even_if_correctly_signed():
    key = signing_key("ES256")
    verifier = await verifier_for(key, algorithms=("RS256",))
    assert await outcome(verifier, token(key)) == "algorithm_not_allowed"


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"], "exp": 1},
        {"crit": ["urn:example:unknown"], "urn:example:unknown": True},
        {"crit": ["b64"]},
        {"crit": "b64"},
        {"crit": []},
        {"crit": [1]},
        {"crit": None},
        {"crit": ["urn:example:unknown", "b64"], "urn:example:unknown": 1},
    ],
)
async def test_critical_header_parameter_not_understood_refuses_the_token(extra):
    key = signing_key("RS256")
    verifier = await verifier_for(key)
    assert await outcome(verifier, token(key, **extra)) == "invalid_token"


async def test_critical_b64_with_its_default_value_is_understood():
    key = signing_key("RS256")
    verifier = await verifier_for(key)
    header = {"alg": "RS256", "kid": key.kid, "crit": ["b64"], "b64": True}
    assert await outcome(verifier, signed(header, claims(), pkcs1(hashes.SHA256()))) == "ok"


@pytest.mark.parametrize("crit", [["b64"], ABSENT])
async def test_unencoded_payload_is_never_honoured(crit):
    """RFC 7797 "b64": false would make the signature cover other bytes than the claims read."""
    key = signing_key("RS256")
    verifier = await verifier_for(key)
    header = {"alg": "RS256", "kid": key.kid, "b64": False, "crit": crit}
    header = {name: value for name, value in header.items() if value is not ABSENT}
    forged = signed(header, claims(), pkcs1(hashes.SHA256()))
    assert await outcome(verifier, forged) == "malformed_token"


@pytest.mark.parametrize(
    "payload",
    [
        claims(exp=1),
        claims(aud="other-api"),
        claims(exp="never"),
        claims(nbf=4_000_000_000),
        claims(sub=7),
        claims(exp=ABSENT),
    ],
)
async def test_bad_signature_is_reported_before_anything_the_claims_say(payload):
    key = signing_key("RS256")
    verifier = await verifier_for(key)
    header, _, signature = token(key).split(".")
    assert await outcome(verifier, f"{header}.{segment(payload)}.{signature}") == (
        "invalid_signature"
    )


async def test_signature_has_a_single_base64url_spelling():
    key = signing_key("RS256")
    verifier = await verifier_for(key)
    good = token(key)
    header, payload, signature = good.split(".")
    # 256 bytes are 342 characters: the last one carries 4 unused bits, which must be zero.
    assert len(signature) % 4 == 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bits = alphabet[alphabet.index(signature[-1]) + 1]
    assert b64_decode(signature[:-1] + same_bits) == b64_decode(signature)
    assert await outcome(verifier, good) == "ok"
    assert await outcome(verifier, f"{header}.{payload}.{signature[:-1]}{same_bits}") == (
        "malformed_token"
    )
    assert await outcome(verifier, good + "==") == "malformed_token"
    # 345 characters: a last quantum of one character holds no whole byte.
    assert await outcome(verifier, good + "AAA") == "malformed_token"


def b64_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
