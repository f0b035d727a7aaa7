"""Public keys for token verification, and the cache that keeps them fresh.

Parsing is pure. Fetching is a port (:class:`KeyFetcher`): a JWKS URL, a JWKS file or a PEM key
each implement it. :class:`KeyCache` owns the policy every source shares: keep the last good key
set, refresh on schedule, and refetch on an unknown ``kid`` at most once per interval, one fetch
at a time (single-flight), remembering kids that were still unknown afterwards (negative cache).
A token's ``kid``, ``jku`` or ``x5u`` never chooses *where* keys come from.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from authz.errors import KeySourceError

__all__ = [
    "FetchedKeys",
    "KeyCache",
    "KeyFetcher",
    "KeyParseError",
    "KeySet",
    "PublicKey",
    "parse_jwks",
    "parse_pem",
]

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
_ASYMMETRIC_KTY = frozenset({"RSA", "EC", "OKP"})
_MIN_RSA_BITS = 2048
log = logging.getLogger("doma.authz.keys")
# A key set is an object, a list of keys, and a list or two in a key (x5c): 32 is generous.
_MAX_JWKS_DEPTH = 32
# A JSON string (skipped whole, so brackets inside it are not counted) or one bracket.
_JSON_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class KeyParseError(KeySourceError):
    """Key material is not a usable public key."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key: PublicKey
    # The JWK's own "alg", when it pins one; None lets any allowed algorithm of its type use it.
    algorithm: str | None = None


@dataclass(frozen=True, slots=True)
class KeySet:
    """Keys by ``kid``; ``unnamed`` holds keys without a kid (tried only for tokens without one)."""

    by_kid: dict[str, VerificationKey] = field(default_factory=dict)
    unnamed: tuple[VerificationKey, ...] = ()

    def __len__(self) -> int:
        return len(self.by_kid) + len(self.unnamed)

    def candidates(self, kid: str | None) -> tuple[VerificationKey, ...]:
        if kid is not None:
            key = self.by_kid.get(kid)
            return (key,) if key else ()
        return self.unnamed or tuple(self.by_kid.values())


def parse_jwks(data: bytes) -> KeySet:
    """A JWKS document as a :class:`KeySet`. Symmetric and encryption keys are ignored."""
    if _nested_deeper_than(data, _MAX_JWKS_DEPTH):
        # Before the parser sees it: a hundred thousand nested arrays fit well under the size
        # cap, and would end the C parser's recursion with a RecursionError.
        raise KeyParseError("JWKS is nested too deep to be a key set")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyParseError("JWKS is not valid JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyParseError("JWKS must be an object with a 'keys' list")
    by_kid: dict[str, VerificationKey] = {}
    unnamed: list[VerificationKey] = []
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            raise KeyParseError(f"JWKS key #{index} is not an object")
        kty, ops = jwk.get("kty"), jwk.get("key_ops")
        # Only a signing key: a kty that is no string (a list, an object) is no key at all, and
        # key_ops, when given, must allow "verify" (RFC 7517 4.3).
        if not isinstance(kty, str) or kty not in _ASYMMETRIC_KTY or jwk.get("use", "sig") != "sig":
            continue
        if ops is not None and not (isinstance(ops, list) and "verify" in ops):
            continue
        try:
            key = VerificationKey(PyJWK(jwk).key, jwk.get("alg"))
        # PyJWTError, not only PyJWKError: PyJWK raises InvalidKeyError for some keys (an OKP
        # key on a curve it cannot sign with), and that must fail the parse, not the caller.
        except (PyJWTError, ValueError, TypeError) as exc:
            raise KeyParseError(
                f"JWKS key #{index} is not a usable public key ({type(exc).__name__})"
            ) from exc
        if isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size < _MIN_RSA_BITS:
            # Factorable with public effort (RFC 7518 3.3 requires 2048 bits): no signing key.
            continue
        kid = jwk.get("kid")
        if isinstance(kid, str):
            by_kid[kid] = key
        else:
            unnamed.append(key)
    if not by_kid and not unnamed:
        raise KeyParseError("JWKS holds no asymmetric signing key")
    return KeySet(by_kid, tuple(unnamed))


def _nested_deeper_than(data: bytes, limit: int) -> bool:
    """Whether JSON ``data`` opens more than ``limit`` arrays or objects inside one another
    (brackets inside strings do not count)."""
    depth = 0
    for token in _JSON_NESTING.finditer(data):
        bracket = token[0]
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif bracket in (b"]", b"}"):
            depth -= 1
    return False


def parse_pem(data: bytes, key_id: str | None) -> KeySet:
    """One PEM public key as a :class:`KeySet` (named ``key_id`` when given)."""
    try:
        key: Any = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyParseError("not a PEM public key") from exc
    if not isinstance(key, PublicKey):
        raise KeyParseError(f"unsupported public key type {type(key).__name__}")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        raise KeyParseError(f"an RSA key of {key.key_size} bits; at least {_MIN_RSA_BITS}")
    verification = VerificationKey(key)
    if key_id:
        return KeySet({key_id: verification})
    return KeySet(unnamed=(verification,))


@dataclass(frozen=True, slots=True)
class FetchedKeys:
    keys: KeySet
    # Seconds the source says these keys stay fresh (e.g. Cache-Control max-age); None: unknown.
    max_age: float | None = None


class KeyFetcher(Protocol):
    """Loads the current key set from wherever the issuer publishes it."""

    async def fetch(self) -> FetchedKeys: ...


class KeyCache:
    """The key set of one issuer: last good keys, scheduled refresh, guarded unknown-kid refetch."""

    def __init__(
        self,
        issuer: str,
        fetcher: KeyFetcher,
        *,
        min_ttl: float,
        max_ttl: float,
        default_ttl: float,
        refetch_min_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.issuer = issuer
        self._fetcher = fetcher
        self._min_ttl, self._max_ttl, self._default_ttl = min_ttl, max_ttl, default_ttl
        self._refetch_min_interval = refetch_min_interval
        self._clock = clock
        self.keys: KeySet | None = None
        self.loaded_at: float | None = None
        self.expires_at: float = 0.0
        self.last_attempt: float = float("-inf")
        self.failures = 0
        self.fetches = 0
        self.last_fetch_failed = False
        # kid -> when it was last found missing; such kids wait out refetch_min_interval.
        self._unknown_kids: dict[str, float] = {}
        self._inflight: asyncio.Task[KeySet | None] | None = None

    @property
    def ready(self) -> bool:
        return self.keys is not None

    def age(self) -> float | None:
        """Seconds since the key set in use was fetched; None before the first success."""
        return None if self.loaded_at is None else self._clock() - self.loaded_at

    def ttl_for(self, max_age: float | None) -> float:
        ttl = self._default_ttl if max_age is None else max_age
        return min(max(ttl, self._min_ttl), self._max_ttl)

    async def refresh(self) -> KeySet | None:
        """Fetch now (joining a fetch already under way). Keeps the last good keys on failure.

        The fetch runs in a task of its own: a check that stops waiting (its deadline passed)
        does not cancel it for the checks behind it, so a rotated key is learnt however short
        the checks' deadlines are.
        """
        inflight = self._inflight
        if inflight is None:
            inflight = self._inflight = asyncio.ensure_future(self._fetch_in_flight())
        return await asyncio.shield(inflight)

    async def _fetch_in_flight(self) -> KeySet | None:
        try:
            return await self._fetch_once()
        finally:
            self._inflight = None

    async def _fetch_once(self) -> KeySet | None:
        self.last_attempt = self._clock()
        self.fetches += 1
        try:
            fetched = await self._fetcher.fetch()
        except KeySourceError:
            self.failures += 1
            self.last_fetch_failed = True
            return self.keys
        except Exception:
            # A source that fails some other way is a failed fetch too, never the end of the
            # refresh loop: the last good keys stay, and the next refresh tries again.
            log.exception("key fetch failed", extra={"issuer": self.issuer})
            self.failures += 1
            self.last_fetch_failed = True
            return self.keys
        self.last_fetch_failed = False
        now = self._clock()
        self.keys, self.loaded_at = fetched.keys, now
        self.expires_at = now + self.ttl_for(fetched.max_age)
        self._unknown_kids.clear()
        return self.keys

    async def keys_for_kid(self, kid: str) -> KeySet | None:
        """Keys after making sure ``kid`` was looked for, within the refetch rate limit."""
        keys = self.keys
        if keys is not None and kid in keys.by_kid:
            return keys
        now = self._clock()
        if now - self._unknown_kids.get(kid, float("-inf")) < self._refetch_min_interval:
            return keys
        if self._inflight is None and now - self.last_attempt < self._refetch_min_interval:
            return keys
        keys = await self.refresh()
        if keys is None or kid not in keys.by_kid:
            # A flood of random kids must not grow memory without bound.
            if len(self._unknown_kids) >= 1024:
                self._unknown_kids.clear()
            self._unknown_kids[kid] = self._clock()
        return keys

    def next_refresh_in(self) -> float:
        """Seconds until the scheduled refresh; failures retry sooner, bounded by ``min_ttl``."""
        now = self._clock()
        if self.keys is None or self.last_fetch_failed:
            return min(max(1.0, self._refetch_min_interval), self._min_ttl or 1.0)
        return max(self.expires_at - now, 0.0)
