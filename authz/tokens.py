"""Bearer-token parsing and JWT verification, with a bounded cache of verified tokens.

Verification picks the issuer from the (unverified) ``iss`` claim, the key from that issuer's own
key set by ``kid``, and checks the signature with an allow-listed asymmetric algorithm
(:mod:`authz.signatures`), then ``iat``, ``nbf``, ``exp``, ``iss`` and ``aud`` with the issuer's
leeway (:mod:`authz.claims`). The token is parsed once. Before the signature verifies, only the
header and ``iss`` are read, to choose the issuer, algorithm and key: a token with a bad signature
is never refused for what its claims say. A verified token is cached by a hash of its bytes (never
the token itself) until its ``exp``, so a repeated token costs a dictionary lookup instead of an
RSA operation.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authz.claims import claims_deny_reason, numeric_date
from authz.keys import KeyCache, KeySet, VerificationKey
from authz.lru import LRU
from authz.settings import IssuerSettings
from authz.signatures import SIGNATURE_ALGORITHMS

__all__ = ["CredentialMemo", "TokenError", "TokenVerifier", "VerifiedToken", "bearer_token"]

_JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_BASE64 = bytes.maketrans(b"-_", b"+/")
# A segment ending in a 2 (3) character quantum leaves 4 (2) bits of its last character unused;
# only the characters with those bits zero are canonical, so a signature has a single spelling.
_CANONICAL_LAST = {2: frozenset(_BASE64URL[::16]), 3: frozenset(_BASE64URL[::4])}
_PADDING = (b"", b"", b"==", b"=")
# json.loads(text) without its per-call argument handling: the same decoder, called directly.
_json_decode = json.JSONDecoder().decode
# Critical header parameters (RFC 7515 4.1.11) this verifier understands: "b64" only in its
# default form, true (an unencoded payload, "b64": false, is refused as malformed).
_UNDERSTOOD_CRITICAL = frozenset({"b64"})


class TokenError(Exception):
    """A token was refused; ``reason`` is the stable snake_case deny reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True, eq=False)
class VerifiedToken:
    issuer: str
    claims: Mapping[str, Any]
    # Epoch seconds after which the cached verification may no longer be used.
    valid_until: float
    # What a consumer derives from this verification (the core's allow decision, by core), kept
    # exactly as long as the verification is cached. Threads may race to fill an entry with
    # equal values; a dict's get and set are atomic, so no lock.
    derived: dict[object, Any] = field(default_factory=dict, repr=False)
    # The key that verified the signature, its issuer's key cache, the key set it was last found
    # in, and the token's kid: a cached verification lasts only while its key is still published.
    key: VerificationKey | None = field(default=None, repr=False)
    key_cache: KeyCache | None = field(default=None, repr=False)
    key_set: KeySet | None = field(default=None, repr=False)
    kid: str | None = field(default=None, repr=False)

    def key_still_published(self) -> bool:
        """Whether the issuer's current key set still offers the verifying key for this token's
        ``kid``, as a new verification would pick it: a key pulled from the JWKS (rotated out,
        or compromised), or published under another kid, takes its cached verifications with
        it."""
        cache = self.key_cache
        if cache is None:
            return True
        current = cache.keys
        if current is self.key_set:
            return True
        if current is None or self.key not in current.candidates(self.kid):
            return False
        # Threads may race to record the same set.
        self.key_set = current
        return True


class CredentialMemo:
    """The last ``Authorization`` value one client connection sent, and its verification.

    A client sends the same credential on request after request of a connection. When the
    connection's next value is byte for byte the same, :meth:`TokenVerifier.recall` hands back
    the verification without parsing, hashing and looking the token up again. Everything that
    can change between two requests is still checked on each: ``exp`` plus leeway and the key
    still published (here), the path and revocation (by the core). An adapter keeps one per
    client connection, so a memo only ever holds what that connection's own client sent, and
    it goes with the connection; only verified tokens enter it, never a refused one.
    """

    __slots__ = ("header", "verified", "verifier")

    def __init__(self) -> None:
        self.header: str | None = None
        self.verified: VerifiedToken | None = None
        self.verifier: TokenVerifier | None = None


def bearer_token(header: str, max_bytes: int) -> str:
    """The token of an ``Authorization: Bearer`` header, or :class:`TokenError`.

    Only the shape a cache lookup needs is checked here: three dot-separated parts. The
    base64url alphabet is checked when a token is verified, which every token does before it
    can be cached; a cached token is one byte for byte (its SHA-256 digest matched), so checking
    the alphabet again on every request (2 us for a typical token) would prove nothing new.
    """
    # Envoy joins repeated headers with ",": never pick one of several credentials.
    if "," in header:
        raise TokenError("multiple_authorization_headers")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise TokenError("unsupported_authorization_scheme")
    token = token.strip()
    if not token:
        raise TokenError("missing_token")
    if len(token) > max_bytes:
        raise TokenError("token_too_large")
    if token.count(".") != 2:
        raise TokenError("malformed_token")
    return token


def _digest(token: str) -> bytes:
    """The cache key of a token: a hash, so the cache never holds a usable credential."""
    # SHA-256: a third cheaper than BLAKE2b here (OpenSSL's, with the CPU's SHA extensions).
    return hashlib.sha256(token.encode()).digest()


class TokenVerifier:
    """Verifies tokens of the configured issuers; one instance per process, shared by adapters."""

    def __init__(
        self,
        issuers: tuple[IssuerSettings, ...],
        key_caches: Mapping[str, KeyCache],
        *,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ):
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        self._key_caches = key_caches
        self._clock = clock
        self._cache: LRU[bytes, VerifiedToken] | None = LRU(cache_size) if cache_size else None
        # gRPC checks look tokens up from grpc's threads while the event loop verifies and
        # inserts others; an LRU lookup reorders the cache, so every access holds this lock.
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0

    def verify_now(self, token: str) -> VerifiedToken | None:
        """Verify ``token`` if that needs no I/O, else None (then await :meth:`verify`).

        A cached token, or one whose key is already loaded: everything but an unknown ``kid``,
        which may need a key fetch. Raises :class:`TokenError` like :meth:`verify`. Safe to call
        from any thread.
        """
        digest = _digest(token)
        cached = self._cached(digest)
        if cached is not None:
            return cached
        outcome = self._verify_or_parse(token, digest)
        return outcome if isinstance(outcome, VerifiedToken) else None

    def recall(self, memo: CredentialMemo, header: str) -> VerifiedToken | None:
        """``memo``'s verification if it was made by this verifier for ``header`` and is still
        good as a cache hit would be (before ``exp`` plus leeway, its key still published).
        Not counted: the caller counts the hit (:meth:`count_hit`) once it answers with it."""
        verified = memo.verified
        if verified is None or memo.verifier is not self or memo.header != header:
            return None
        if not self._still_good(verified):
            memo.header = memo.verified = None
            return None
        return verified

    def count_hit(self) -> None:
        """One check answered from a verification made earlier (a memo recalled)."""
        with self._cache_lock:
            self.cache_hits += 1

    def remember(self, memo: CredentialMemo, header: str, verified: VerifiedToken) -> None:
        """Keep ``verified`` in ``memo`` for ``header``, unless the token cache is off: then
        every request verifies its token, as configured."""
        if self._cache is not None:
            memo.header, memo.verified, memo.verifier = header, verified, self

    async def verify(self, token: str) -> VerifiedToken:
        digest = _digest(token)
        outcome = self._cached(digest) or self._verify_or_parse(token, digest)
        if isinstance(outcome, VerifiedToken):
            return outcome
        # The token names a kid the loaded key set lacks: look for it (a fetch, rate-limited).
        self._count_miss()
        assert outcome.kid is not None  # every token without one is decided at once
        keys = await outcome.key_cache.keys_for_kid(outcome.kid)
        return self._remember(digest, _verified(outcome, keys))

    def _verify_or_parse(self, token: str, digest: bytes) -> VerifiedToken | _Parsed:
        """An uncached token verified when no I/O is needed, else the token read, whose kid the
        loaded key set lacks (a miss counted by :meth:`verify`, which fetches)."""
        try:
            parsed = self._parse(token)
        except TokenError:
            self._count_miss()
            raise
        keys = parsed.key_cache.keys
        if parsed.kid is not None and (keys is None or parsed.kid not in keys.by_kid):
            return parsed
        self._count_miss()
        return self._remember(digest, _verified(parsed, keys))

    def _cached(self, digest: bytes) -> VerifiedToken | None:
        cache = self._cache
        if cache is None:
            return None
        with self._cache_lock:
            cached = cache.get(digest)
            if cached is None:
                return None
            if not self._still_good(cached):
                cache.pop(digest)
                return None
            self.cache_hits += 1
        return cached

    def _still_good(self, verified: VerifiedToken) -> bool:
        """Whether a verification made earlier may answer now: before ``exp`` plus leeway, its
        key still published under the token's kid."""
        return self._clock() <= verified.valid_until and verified.key_still_published()

    def _count_miss(self) -> None:
        with self._cache_lock:
            self.cache_misses += 1

    def _remember(self, digest: bytes, verified: VerifiedToken) -> VerifiedToken:
        if self._cache is not None:
            with self._cache_lock:
                self._cache.put(digest, verified)
        return verified

    def _parse(self, token: str) -> _Parsed:
        """The token read and its issuer, algorithm and kid checked: all before any key."""
        header, unverified, signing_input, signature = _unverified(token)
        algorithm = header.get("alg")
        issuer_name = unverified.get("iss")
        if not isinstance(issuer_name, str) or issuer_name not in self._issuers:
            raise TokenError("unknown_issuer")
        issuer = self._issuers[issuer_name]
        # Membership in the issuer's tuple first: only then is "alg" a string safe to hash.
        if algorithm not in issuer.algorithms or algorithm not in SIGNATURE_ALGORITHMS:
            raise TokenError("algorithm_not_allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("malformed_token")
        return _Parsed(
            header, unverified, signing_input, signature, issuer, algorithm, kid,
            self._key_caches[issuer_name],
        )  # fmt: skip


# Not frozen: one is built per new token, and a frozen dataclass's __init__ costs several times
# more; it never leaves this module.
@dataclass(slots=True)
class _Parsed:
    """A token read but not yet trusted: what choosing and using its key needs."""

    header: dict[str, Any]
    unverified: dict[str, Any]
    signing_input: bytes
    signature: bytes
    issuer: IssuerSettings
    algorithm: str
    kid: str | None
    key_cache: KeyCache


def _verified(parsed: _Parsed, keys: KeySet | None) -> VerifiedToken:
    """Check the signature against ``keys``, then the claims; :class:`TokenError` otherwise."""
    algorithm = parsed.algorithm
    signature_algorithm = SIGNATURE_ALGORITHMS[algorithm]
    candidates = keys.candidates(parsed.kid) if keys is not None else ()
    # A key of another type than the algorithm's (an EC key for RS256) is no key for it.
    usable = [
        c
        for c in candidates
        if c.algorithm in (None, algorithm) and signature_algorithm.fits(c.key)
    ]
    if not usable:
        raise TokenError("unknown_key")
    reason = _header_deny_reason(parsed.header)
    if reason is not None:
        raise TokenError(reason)
    # Without a kid every key of the issuer is a candidate: the first that verifies wins.
    for candidate in usable:
        if signature_algorithm.verify(candidate.key, parsed.signing_input, parsed.signature):
            break
    else:
        raise TokenError("invalid_signature")
    # Claims are judged by wall-clock time; the injected clock only ages cache entries.
    claims, issuer = parsed.unverified, parsed.issuer
    reason = claims_deny_reason(claims, issuer, time.time())
    if reason is not None:
        raise TokenError(reason)
    return VerifiedToken(
        issuer.issuer, claims, _valid_until(claims, issuer.leeway),
        key=candidate, key_cache=parsed.key_cache, key_set=keys, kid=parsed.kid,
    )  # fmt: skip


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signing input and signature: the one parse of a token.

    Nothing read here is trusted before the signature over the signing input verifies; header
    and claims only choose the issuer, the algorithm and the key until then. Segments must be
    canonical unpadded base64url (RFC 7515 section 2), header and claims UTF-8 JSON objects.
    """
    if not _JWS_COMPACT.fullmatch(token):
        raise TokenError("malformed_token")
    encoded = token.encode("ascii")
    header_b64, payload_b64, signature_b64 = encoded.split(b".")
    try:
        header = _json_decode(_b64decode(header_b64).decode())
        claims = _json_decode(_b64decode(payload_b64).decode())
        signature = _b64decode(signature_b64)
    except (ValueError, RecursionError) as exc:  # binascii and Unicode errors are ValueErrors
        raise TokenError("malformed_token") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("malformed_token")
    return header, claims, encoded[: len(header_b64) + 1 + len(payload_b64)], signature


def _b64decode(segment: bytes) -> bytes:
    """The bytes of a canonical unpadded base64url segment; ValueError for any other spelling."""
    remainder = len(segment) % 4
    if remainder and (remainder == 1 or segment[-1] not in _CANONICAL_LAST[remainder]):
        raise ValueError("not canonical base64url")
    return binascii.a2b_base64(segment.translate(_TO_BASE64) + _PADDING[remainder])


def _header_deny_reason(header: Mapping[str, Any]) -> str | None:
    # RFC 7797: with "b64": false the payload segment is not base64url, so the signature would
    # cover other bytes than the claims read here. Never honoured.
    if header.get("b64", True) is False:
        return "malformed_token"
    # RFC 7515 4.1.11: a critical extension this verifier does not understand refuses the token.
    if "crit" in header:
        critical = header["crit"]
        if not isinstance(critical, list) or not critical:
            return "invalid_token"
        for name in critical:
            if not isinstance(name, str) or name not in _UNDERSTOOD_CRITICAL or name not in header:
                return "invalid_token"
    return None


def _valid_until(claims: Mapping[str, Any], leeway: float) -> float:
    expires = numeric_date(claims.get("exp"))
    if expires is None:
        return math.inf
    try:
        return expires + leeway
    except OverflowError:  # JSON integers are unbounded: an exp past any float is "never".
        return math.inf
