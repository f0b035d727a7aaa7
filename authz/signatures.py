"""JWS signatures (RFC 7515, RFC 7518 section 3, RFC 8037) of the allowed asymmetric algorithms.

Each algorithm names the one key type it may use and checks a signature over the signing input
(``header_b64 + "." + payload_b64`` as ASCII) with ``cryptography``. A key of another type never
fits: an EC key for RS256, an RSA key for ES256, a P-384 key for ES256 or an RSA key for EdDSA is
skipped, never coerced, so no key can be read the way another algorithm reads keys.

Padding and hash objects are built once here rather than per signature.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from authz.keys import PublicKey

__all__ = ["SIGNATURE_ALGORITHMS", "SignatureAlgorithm"]


class SignatureAlgorithm(Protocol):
    def fits(self, key: PublicKey) -> bool:
        """Whether ``key`` is of the type this algorithm verifies with."""
        ...

    def verify(self, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``key``'s signature of ``signing_input`` (False on a misfit)."""
        ...


class _RsaSignature:
    """RSASSA-PKCS1-v1_5 (RS*) or RSASSA-PSS (PS*) with one SHA-2 hash."""

    __slots__ = ("_hash", "_padding")

    def __init__(
        self, hash_algorithm: hashes.HashAlgorithm, rsa_padding: padding.AsymmetricPadding
    ):
        self._hash = hash_algorithm
        self._padding = rsa_padding

    def fits(self, key: PublicKey) -> bool:
        return isinstance(key, rsa.RSAPublicKey)

    def verify(self, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        try:
            key.verify(signature, signing_input, self._padding, self._hash)
        except InvalidSignature:
            return False
        return True


def _pss(hash_algorithm: hashes.HashAlgorithm) -> _RsaSignature:
    # RFC 7518 3.5: MGF1 with the same hash, and a salt as long as the hash output. A fixed salt
    # length is also checked on verification, so a PSS signature with another salt is refused.
    mgf = padding.MGF1(hash_algorithm)
    return _RsaSignature(hash_algorithm, padding.PSS(mgf, hash_algorithm.digest_size))


class _EcdsaSignature:
    """ECDSA on one curve; the JWS signature is r || s, each exactly the curve's size in bytes."""

    __slots__ = ("_curve", "_ecdsa", "_half")

    def __init__(self, hash_algorithm: hashes.HashAlgorithm, curve: ec.EllipticCurve):
        self._curve = type(curve)
        self._ecdsa = ec.ECDSA(hash_algorithm)
        self._half = (curve.key_size + 7) // 8

    def fits(self, key: PublicKey) -> bool:
        # ES256 means P-256 (ES384 P-384, ES512 P-521): a key on another curve is not ES256's.
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, self._curve)

    def verify(self, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
        half = self._half
        # A DER signature, or r || s of another size, is not a JWS signature of this curve.
        if len(signature) != 2 * half or not self.fits(key):
            return False
        assert isinstance(key, ec.EllipticCurvePublicKey)
        r = int.from_bytes(signature[:half], "big")
        s = int.from_bytes(signature[half:], "big")
        try:
            key.verify(encode_dss_signature(r, s), signing_input, self._ecdsa)
        except InvalidSignature:
            return False
        return True


class _EdDsaSignature:
    """EdDSA (RFC 8037): the curve is the key's own, Ed25519 or Ed448."""

    __slots__ = ()

    def fits(self, key: PublicKey) -> bool:
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)

    def verify(self, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
        if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            return False
        try:
            key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True


# Exactly the algorithms of authz.settings.ASYMMETRIC_ALGORITHMS: no "none", no HMAC.
SIGNATURE_ALGORITHMS: dict[str, SignatureAlgorithm] = {
    "RS256": _RsaSignature(hashes.SHA256(), padding.PKCS1v15()),
    "RS384": _RsaSignature(hashes.SHA384(), padding.PKCS1v15()),
    "RS512": _RsaSignature(hashes.SHA512(), padding.PKCS1v15()),
    "PS256": _pss(hashes.SHA256()),
    "PS384": _pss(hashes.SHA384()),
    "PS512": _pss(hashes.SHA512()),
    "ES256": _EcdsaSignature(hashes.SHA256(), ec.SECP256R1()),
    "ES384": _EcdsaSignature(hashes.SHA384(), ec.SECP384R1()),
    "ES512": _EcdsaSignature(hashes.SHA512(), ec.SECP521R1()),
    "EdDSA": _EdDsaSignature(),
}
