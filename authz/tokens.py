"""Bearer-token parsing and JWT verification, with a bounded cache of verified tokens.

Verification picks the issuer from the (unverified) ``iss`` claim, the key from that issuer's own
key set by ``kid``, and checks the signature with an allow-listed asymmetric algorithm, then
``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` with the issuer's leeway. A verified token is
cached by a hash of its bytes (never the token itself) until its ``exp``, so a repeated token
costs a dictionary lookup instead of an RSA operation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cachetools import LRUCache
from jwt import exceptions as jwt_errors

from authz.keys import KeyCache
from authz.settings import IssuerSettings

__all__ = ["TokenError", "TokenVerifier", "VerifiedToken", "bearer_token"]

_JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class TokenError(Exception):
    """A token was refused; ``reason`` is the stable snake_case deny reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, eq=False)
class VerifiedToken:
    issuer: str
    claims: Mapping[str, Any]
    # Epoch seconds after which the cached verification may no longer be used.
    valid_until: float


def bearer_token(header: str, max_bytes: int) -> str:
    """The token of an ``Authorization: Bearer`` header, or :class:`TokenError`."""
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
    if not _JWS_COMPACT.fullmatch(token):
        raise TokenError("malformed_token")
    return token


_ERROR_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "token_expired"),
    (jwt_errors.ImmatureSignatureError, "token_not_yet_valid"),
    (jwt_errors.InvalidAudienceError, "invalid_audience"),
    (jwt_errors.InvalidIssuerError, "invalid_issuer"),
    (jwt_errors.InvalidSignatureError, "invalid_signature"),
    (jwt_errors.MissingRequiredClaimError, "missing_claim"),
    (jwt_errors.InvalidAlgorithmError, "algorithm_not_allowed"),
    (jwt_errors.InvalidIssuedAtError, "invalid_issued_at"),
    (jwt_errors.DecodeError, "malformed_token"),
)


def _digest(token: str) -> bytes:
    """The cache key of a token: a hash, so the cache never holds a usable credential."""
    return hashlib.blake2b(token.encode(), digest_size=16).digest()


def _reason_of(exc: Exception) -> str:
    for kind, reason in _ERROR_REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid_token"


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
        self._cache: LRUCache[bytes, VerifiedToken] | None = (
            LRUCache(cache_size) if cache_size else None
        )
        # gRPC checks look tokens up from grpc's threads while the event loop verifies and
        # inserts others; an LRU lookup reorders the cache, so every access holds this lock.
        self._cache_lock = threading.Lock()
        self._jwt = jwt.PyJWT()
        self.cache_hits = 0
        self.cache_misses = 0

    def lookup(self, token: str) -> VerifiedToken | None:
        """The cached verification of ``token``, if it is cached and not past its expiry."""
        if self._cache is None:
            return None
        return self._cached(_digest(token))

    def _cached(self, digest: bytes) -> VerifiedToken | None:
        cache = self._cache
        if cache is None:
            return None
        with self._cache_lock:
            cached = cache.get(digest)
            if cached is None:
                return None
            if self._clock() > cached.valid_until:
                del cache[digest]
                return None
            self.cache_hits += 1
        return cached

    async def verify(self, token: str) -> VerifiedToken:
        digest = _digest(token)
        cached = self._cached(digest)
        if cached is not None:
            return cached
        # Only the event loop verifies, so this counter needs no lock (hits are counted under it).
        self.cache_misses += 1
        verified = await self._verify_uncached(token)
        if self._cache is not None:
            with self._cache_lock:
                self._cache[digest] = verified
        return verified

    async def _verify_uncached(self, token: str) -> VerifiedToken:
        header, unverified = _unverified(token)
        algorithm = header.get("alg")
        issuer_name = unverified.get("iss")
        if not isinstance(issuer_name, str) or issuer_name not in self._issuers:
            raise TokenError("unknown_issuer")
        issuer = self._issuers[issuer_name]
        if algorithm not in issuer.algorithms:
            raise TokenError("algorithm_not_allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("malformed_token")

        key_cache = self._key_caches[issuer_name]
        keys = key_cache.keys if kid is None else await key_cache.keys_for_kid(kid)
        candidates = keys.candidates(kid) if keys is not None else ()
        candidates = tuple(c for c in candidates if c.algorithm in (None, algorithm))
        if not candidates:
            raise TokenError("unknown_key")

        last_error: Exception | None = None
        for candidate in candidates:
            try:
                claims = self._jwt.decode(
                    token,
                    candidate.key,
                    algorithms=list(issuer.algorithms),
                    audience=list(issuer.audiences),
                    issuer=issuer.issuer,
                    leeway=issuer.leeway,
                    options={"require": list(issuer.required_claims), "strict_aud": False},
                )
            except jwt_errors.InvalidSignatureError as exc:
                last_error = exc
                continue
            except jwt_errors.PyJWTError as exc:
                raise TokenError(_reason_of(exc)) from exc
            return VerifiedToken(issuer_name, claims, _valid_until(claims, issuer.leeway))
        assert last_error is not None
        raise TokenError(_reason_of(last_error)) from last_error


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, read only to choose the issuer and the key: nothing here is trusted.

    PyJWT checks every segment again, strictly, when it verifies the signature. Reading them
    once here rather than through PyJWT twice (it validates the alphabet byte by byte in Python)
    halves the cost of an uncached verification.
    """
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenError("malformed_token")
    try:
        header = json.loads(_b64decode(segments[0]))
        claims = json.loads(_b64decode(segments[1]))
    except (ValueError, RecursionError) as exc:  # binascii and Unicode errors are ValueErrors
        raise TokenError("malformed_token") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("malformed_token")
    return header, claims


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _valid_until(claims: Mapping[str, Any], leeway: float) -> float:
    exp = claims.get("exp")
    return float(exp) + leeway if isinstance(exp, int | float) else float("inf")
