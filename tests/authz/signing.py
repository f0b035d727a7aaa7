"""Keys of every allowed algorithm, tokens signed by hand or by PyJWT, a verifier trusting them."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authz.keys import KeyCache
from authz.settings import ASYMMETRIC_ALGORITHMS
from authz.tokens import TokenError, TokenVerifier
from tests.authz.helpers import FakeFetcher, issuer
from tests.support.tokens import ISSUER, default_claims

# Marks a claim or header parameter to leave out (None is JSON null, a value of its own).
ABSENT: Any = object()


@dataclass(frozen=True)
class AlgorithmKey:
    """A private key and the algorithm a token signed with it names; ``kid`` is its JWKS name."""

    algorithm: str
    kid: str
    private: Any

    @property
    def public(self) -> Any:
        return self.private.public_key()

    @property
    def jwk(self) -> dict[str, Any]:
        """The public JWK, without "alg" where PyJWK allows: the key's type decides its use."""
        public = self.public
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            # PyJWK cannot tell an Ed448 JWK's algorithm from its "crv": only "alg" names it.
            jwk = {**OKPAlgorithm.to_jwk(public, as_dict=True), "alg": "EdDSA"}
        return {**jwk, "kid": self.kid, "use": "sig"}


@functools.cache
def _rsa(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private(kind: str, name: str) -> Any:
    if kind == "rsa":
        return _rsa(name)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[kind]
    return ec.generate_private_key(curve)


_KINDS = {
    "RS256": "rsa",
    "RS384": "rsa",
    "RS512": "rsa",
    "PS256": "rsa",
    "PS384": "rsa",
    "PS512": "rsa",
    "ES256": "p256",
    "ES384": "p384",
    "ES512": "p521",
    "EdDSA-Ed25519": "ed25519",
    "EdDSA-Ed448": "ed448",
}
# Every allowed algorithm once; EdDSA with each of its two curves.
KEY_NAMES = tuple(_KINDS)


@functools.cache
def signing_key(name: str, *, other: bool = False) -> AlgorithmKey:
    """The key of ``name`` (e.g. "ES384", "EdDSA-Ed448"); ``other`` is a second key of that kind.

    RSA keys are shared by RS* and PS*: generating them is what makes these tests slow.
    """
    kind = _KINDS[name]
    suffix = "-other" if other else ""
    return AlgorithmKey(name.partition("-")[0], f"{kind}{suffix}", _private(kind, f"rsa{suffix}"))


def claims(**overrides: Any) -> dict[str, Any]:
    values = default_claims(**overrides)
    return {name: value for name, value in values.items() if value is not ABSENT}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    """A JSON value as a base64url segment (bytes are taken as the JSON text itself)."""
    return b64(value if isinstance(value, bytes) else json.dumps(value).encode())


def signed(header: Any, payload: Any, sign: Callable[[bytes], bytes]) -> str:
    """A compact JWS signed by ``sign`` over exactly ``header_b64.payload_b64``."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def token(key: AlgorithmKey, payload: Any = None, **headers: Any) -> str:
    """A token signed by PyJWT with ``key`` under its kid (``headers`` add or drop parameters)."""
    header: dict[str, Any] = {"kid": key.kid, **headers}
    header = {name: value for name, value in header.items() if value is not ABSENT}
    return jwt.encode(
        claims() if payload is None else payload, key.private, key.algorithm, headers=header
    )


async def verifier_for(
    *keys: AlgorithmKey,
    named: bool = True,
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS,
    **issuer_overrides: Any,
) -> TokenVerifier:
    """A verifier of one issuer allowing ``algorithms``, trusting ``keys`` (by kid or unnamed)."""
    jwks = [{k: v for k, v in key.jwk.items() if named or k != "kid"} for key in keys]
    document = json.dumps({"keys": jwks}).encode()
    key_cache = KeyCache(
        ISSUER,
        FakeFetcher(document),
        min_ttl=60,
        max_ttl=3600,
        default_ttl=300,
        refetch_min_interval=5,
    )
    await key_cache.refresh()
    settings = issuer(algorithms=algorithms, **issuer_overrides)
    return TokenVerifier((settings,), {ISSUER: key_cache}, cache_size=0)


async def outcome(verifier: TokenVerifier, token: str) -> str:
    """ "ok" or the deny reason."""
    try:
        await verifier.verify(token)
    except TokenError as exc:
        return exc.reason
    return "ok"


__all__ = [
    "ABSENT",
    "KEY_NAMES",
    "AlgorithmKey",
    "b64",
    "claims",
    "outcome",
    "segment",
    "signed",
    "signing_key",
    "token",
    "verifier_for",
]
