"""Making revocations: validate, write the store, then publish on the bus.

The order matters: the store is the truth, so it is written first; an instance that misses the
event still sees the bumped epoch. A failed publish does not undo the revoke: it is reported
(``published=False``) and the epoch check spreads it within its interval.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from authz.errors import AlreadyExpired, BusError, InvalidRevocation
from authz.revocation import (
    InvalidationBus,
    RevocationEvent,
    RevocationStore,
    check_identifier,
    encode_event,
    is_revoked,
)

__all__ = ["RevokeResult", "Revoker"]

log = logging.getLogger("doma.authz.revocation")

# The end of year 9999: a revocation of a token whose exp lies beyond it is kept until then. The
# verifier accepts any exp ahead, so every exp it accepts must be revocable; the stores and
# datetime stop there.
_KEPT_AT_MOST_UNTIL = 253_402_300_799


@dataclass(frozen=True, slots=True)
class RevokeResult:
    epoch: int
    # Whether the event reached the bus; when not, instances learn it from the epoch check.
    published: bool
    # When the store forgets this revocation (epoch seconds).
    kept_until: float


class Revoker:
    def __init__(
        self,
        store: RevocationStore,
        bus: InvalidationBus,
        *,
        subject_ttl: float,
        retention_margin: float = 0.0,
        clock: Callable[[], float] = time.time,
        on_revoked: Callable[[RevocationEvent], None] | None = None,
    ):
        self._store = store
        self._bus = bus
        self._subject_ttl = subject_ttl
        self._margin = retention_margin
        self._clock = clock
        self._on_revoked = on_revoked

    async def revoke_token(self, jti: str, expires_at: float) -> RevokeResult:
        """Revoke one token by ``jti`` until its ``exp`` (the issuers' leeway added)."""
        check_identifier("jti", jti)
        now = self._clock()
        if not math.isfinite(expires_at) or expires_at <= 0:
            raise InvalidRevocation(
                f"unknown jti {_quoted(jti)}: the token's exp is required, "
                "so the revocation can expire with it"
            )
        if expires_at + self._margin <= now:
            raise AlreadyExpired(
                f"token {_quoted(jti)} already expired at {int(expires_at)}; an expired token is "
                "refused anyway, nothing was stored"
            )
        kept_until = min(math.ceil(expires_at + self._margin), _KEPT_AT_MOST_UNTIL)
        epoch = await self._store.revoke_token(jti, kept_until)
        event = RevocationEvent("jti", jti, float(expires_at), epoch, now)
        return RevokeResult(epoch, await self._publish(event), float(kept_until))

    async def revoke_subject(self, subject: str, before: float | None = None) -> RevokeResult:
        """Revoke every token of ``subject`` issued before ``before`` (default: now)."""
        check_identifier("subject", subject)
        now = self._clock()
        before = now if before is None or before == 0 else before
        if not math.isfinite(before) or before < 0:
            raise InvalidRevocation("before must be a time in epoch seconds")
        if before > now + self._subject_ttl:
            raise InvalidRevocation("before is further ahead than the subject revocation is kept")
        # A token issued just before ``before`` lives up to subject_ttl after it: kept that long.
        keep = self._subject_ttl + max(before - now, 0.0)
        epoch = await self._store.revoke_subject(subject, before, keep)
        event = RevocationEvent("subject", subject, before, epoch, now)
        return RevokeResult(epoch, await self._publish(event), now + keep)

    async def is_revoked(
        self, jti: str | None, subject: str | None, issued_at: float | None
    ) -> bool:
        """What the store says now (no cache): for callers that must be exact."""
        if jti:
            check_identifier("jti", jti)
        if subject:
            check_identifier("subject", subject)
        if not jti and not subject:
            raise InvalidRevocation("a jti or a subject is required")
        found = await self._store.lookup(jti or None, subject or None)
        return is_revoked(found, issued_at)

    async def _publish(self, event: RevocationEvent) -> bool:
        if self._on_revoked is not None:
            self._on_revoked(event)
        try:
            await self._bus.publish(encode_event(event))
        except BusError as exc:
            log.warning(
                "revocation stored but not published; "
                "instances pick it up at their next epoch check",
                extra={"event": "publish_failed", "error": str(exc), "epoch": event.epoch},
            )
            return False
        return True


def _quoted(identifier: str) -> str:
    """An identifier as an error message quotes it: a 64 KiB jti would not fit a gRPC status."""
    return repr(identifier if len(identifier) <= 80 else identifier[:80] + "...")
