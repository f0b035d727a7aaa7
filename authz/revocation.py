"""Revocation: the model, its wire form on the invalidation bus, and the ports adapters implement.

Two kinds of revocation exist:

- a token, by ``jti``: kept until that token's ``exp`` (plus the issuers' leeway), then gone;
- a subject, by ``sub`` and a time: every token of that subject issued (``iat``) before the time
  is revoked ("log out everywhere"); a token without ``iat`` counts as issued before any time.

The store is the truth and every revoke bumps its *epoch*, a counter. The bus only carries hints
that let each instance update its local cache at once; an instance that missed one notices the
changed epoch on its next check.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeGuard

from authz.errors import InvalidRevocation

__all__ = [
    "MAX_ID_LENGTH",
    "InvalidationBus",
    "Lookup",
    "RevocationCheck",
    "RevocationEvent",
    "RevocationStore",
    "check_identifier",
    "decode_event",
    "encode_event",
    "is_revoked",
    "issued_before",
]

# As long as the largest token may be (auth.token.max_bytes, at most 64 KiB): every jti or sub
# a token can carry can be revoked.
MAX_ID_LENGTH = 65_536
# Anything a token's jti or sub can hold but control characters: identifiers become parts of
# Redis keys (binary-safe, sent as UTF-8) and JSON log fields. Narrower than the tokens the
# check accepts, it would leave some users impossible to log out everywhere.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A lone surrogate: text Python holds but no UTF-8 (Redis, JSON on the bus) can carry.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

EventKind = Literal["jti", "subject"]


@dataclass(frozen=True, slots=True)
class RevocationEvent:
    """One revocation as published on the bus, after the store accepted it."""

    kind: EventKind
    # The jti or the subject.
    target: str
    # jti: the token's exp; subject: tokens issued before this time are revoked.
    until: float
    # The store's epoch after this revocation was written.
    epoch: int
    # When the revoke was written (epoch seconds): the start of the revoke-to-apply latency.
    revoked_at: float


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the store holds for one token's jti and subject."""

    jti_revoked: bool
    # Tokens of the subject issued before this time are revoked; 0.0: none.
    subject_before: float


class RevocationStore(Protocol):
    """The shared truth (Redis, or memory in one process).

    Every method raises :class:`authz.errors.StoreUnavailable` when the store cannot answer.
    """

    async def revoke_token(self, jti: str, expires_at: float) -> int:
        """Store the jti until ``expires_at``; bump and return the epoch."""
        ...

    async def revoke_subject(self, subject: str, before: float, keep_seconds: float) -> int:
        """Revoke the subject's tokens issued before ``before`` (a later time wins) and keep that
        for ``keep_seconds``; bump and return the epoch."""
        ...

    async def lookup(self, jti: str | None, subject: str | None) -> Lookup: ...

    async def epoch(self) -> int: ...

    def healthy(self) -> bool:
        """False while the store is known to be down (e.g. its circuit breaker is open)."""
        ...

    async def close(self) -> None: ...


class InvalidationBus(Protocol):
    """Fans revocation events out to every instance.

    :meth:`subscribe` connects and subscribes (raising :class:`authz.errors.BusError` when it
    cannot), then yields the payloads received; the iteration raises ``BusError`` when the
    connection is lost. Delivery is at most once: the epoch catches what is lost.
    """

    async def publish(self, payload: bytes) -> None: ...

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...

    async def close(self) -> None: ...


class RevocationCheck(Protocol):
    """The port the decision core calls for every verified token."""

    def check_cached(self, claims: Mapping[str, Any]) -> tuple[bool, str | None]:
        """``(True, answer)`` when the local cache can answer without I/O, else ``(False, None)``.

        ``answer`` is what :meth:`check` would return.
        """
        ...

    async def check(self, claims: Mapping[str, Any]) -> str | None:
        """None when the token may pass, else the deny reason."""
        ...


def is_revoked(lookup: Lookup, issued_at: object) -> bool:
    if lookup.jti_revoked:
        return True
    return lookup.subject_before > 0.0 and issued_before(issued_at, lookup.subject_before)


def issued_before(issued_at: object, before: float) -> bool:
    """Whether a token issued at ``issued_at`` falls under a logout of everything before
    ``before``: only a time proven later escapes it."""
    # A token without a usable iat cannot prove it is newer than the logout: revoked.
    if not isinstance(issued_at, int | float) or isinstance(issued_at, bool):
        return True
    # Not "issued_at < before": NaN compares false both ways.
    return not issued_at >= before


def check_identifier(what: str, value: str) -> str:
    """``value`` when it is a usable jti or subject, else :class:`InvalidRevocation`."""
    if not value:
        raise InvalidRevocation(f"{what} is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRevocation(f"{what} is longer than {MAX_ID_LENGTH} characters")
    if _CONTROL.search(value):
        raise InvalidRevocation(f"{what} must not contain control characters")
    if _SURROGATE.search(value):
        raise InvalidRevocation(f"{what} is not valid Unicode text")
    return value


def encode_event(event: RevocationEvent) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "kind": event.kind,
            "target": event.target,
            "until": event.until,
            "epoch": event.epoch,
            "revoked_at": event.revoked_at,
        },
        separators=(",", ":"),
    ).encode()


def decode_event(payload: bytes) -> RevocationEvent | None:
    """The event in ``payload``, or None when it is not one we understand (it is then ignored)."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("v") != 1:
        return None
    kind, target = data.get("kind"), data.get("target")
    until, epoch, revoked_at = data.get("until"), data.get("epoch"), data.get("revoked_at")
    if kind not in ("jti", "subject") or not isinstance(target, str) or not target:
        return None
    if not (_is_number(until) and _is_number(revoked_at) and isinstance(epoch, int)):
        return None
    return RevocationEvent(kind, target, float(until), int(epoch), float(revoked_at))


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
