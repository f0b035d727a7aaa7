"""The decision core: one :class:`CheckInput` in, one :class:`Decision` out.

Pure with respect to transports: no gRPC, protobuf, HTTP client or Redis here. Keys and
revocation arrive through ports, so the gRPC server, an HTTP check endpoint and the edge
gateway's in-process auth all decide the same way.

Identity headers (the targets of ``claims_to_headers``) are never trusted from the client: every
decision removes each one it does not set, in both its dash and underscore spellings, because
many backends fold ``x_user_id`` into ``x-user-id``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from authz.bypass import BypassRules
from authz.check import CheckInput, Decision, allow, deny
from authz.paths import normalize
from authz.revocation import RevocationCheck
from authz.settings import AuthSettings
from authz.tokens import CredentialMemo, TokenError, TokenVerifier, VerifiedToken, bearer_token

__all__ = ["DENY_STATUS", "Authorizer"]

# Every deny reason and its HTTP status; the reason doubles as a metric label.
DENY_STATUS: dict[str, int] = {
    "invalid_path": 400,
    "missing_token": 401,
    "multiple_authorization_headers": 401,
    "unsupported_authorization_scheme": 401,
    "token_too_large": 401,
    "malformed_token": 401,
    "unknown_issuer": 401,
    "unknown_key": 401,
    "algorithm_not_allowed": 401,
    "invalid_signature": 401,
    "token_expired": 401,
    "token_not_yet_valid": 401,
    "invalid_issued_at": 401,
    "invalid_audience": 401,
    "invalid_issuer": 401,
    "missing_claim": 401,
    "invalid_claim_value": 401,
    "invalid_token": 401,
    "token_revoked": 401,
    # Revocation could not be checked and the configuration says deny (never a silent allow).
    "revocation_store_unavailable": 503,
}
_MAX_HEADER_VALUE = 4096


class Authorizer:
    """Decides checks for one :class:`AuthSettings`."""

    def __init__(
        self,
        settings: AuthSettings,
        verifier: TokenVerifier,
        revocation: RevocationCheck | None = None,
    ):
        self.settings = settings
        self._verifier = verifier
        self._revocation = revocation
        self._bypass = BypassRules(settings.bypass)
        # (claim, header, the header's other spellings): each new token's allow reads them.
        self._mappings = tuple(
            (m.claim, m.header, _spellings(m.header)[1:]) for m in settings.claims_to_headers
        )
        self._denials = {reason: deny(status, reason) for reason, status in DENY_STATUS.items()}
        identity = tuple(h for _, header, others in self._mappings for h in (header, *others))
        self._bypass_decision = allow("bypass", (), identity)

    def decide_now(self, request: CheckInput) -> Decision | None:
        """The decision when no I/O is needed, else None: then await :meth:`decide`.

        Everything up to the token is pure; a token cached or verifiable with keys already
        loaded, whose revocation state the local cache knows, needs nothing else. Adapters
        answer most checks from here without scheduling a coroutine. Safe from any thread.
        """
        header = self._credential(request)
        if isinstance(header, Decision):
            return header
        memo = request.credential_memo
        verified = self._verifier.recall(memo, header) if memo is not None else None
        if verified is not None:
            self._verifier.count_hit()
        else:
            try:
                verified = self._verifier.verify_now(
                    bearer_token(header, self.settings.max_token_bytes)
                )
            except TokenError as exc:
                return self._denials[exc.reason]
            if verified is None:
                return None
            if memo is not None:
                self._verifier.remember(memo, header, verified)
        decision = self._settled(verified)
        if decision is None:
            # decide() goes on from here: only the store read is left to do.
            request.pending = (self, verified)
        return decision

    def decide_repeat(self, memo: CredentialMemo, header: str, path: str) -> Decision | None:
        """:meth:`decide_now` without a :class:`CheckInput`, for a credential its connection
        sent before: the same decision when ``memo`` still holds the verification of ``header``
        and the revocation cache knows its token, else None (then build the CheckInput and call
        ``decide_now``, which takes it from there).

        For an adapter that has refused an invalid or ambiguous target already and passes the
        normalized ``path``, and whose request carries one ``Authorization`` value, ``header``:
        everything ``decide_now`` would check of a recalled credential is checked here too (the
        bypass rules, ``exp``, the key, revocation).
        """
        if self._bypass.matches(path):
            return self._bypass_decision
        verified = self._verifier.recall(memo, header)
        if verified is None:
            return None
        decision = self._settled(verified)
        if decision is not None:
            # Counted once decided: a token the revocation cache does not know is counted by
            # decide_now, which the adapter calls next.
            self._verifier.count_hit()
        return decision

    def _settled(self, verified: VerifiedToken) -> Decision | None:
        """The decision for a verified token when the revocation cache knows its state, else
        None (the store must be read)."""
        if self._revocation is not None:
            known, reason = self._revocation.check_cached(verified.claims)
            if not known:
                return None
            if reason is not None:
                return self._denials[reason]
        return self._allow(verified)

    async def decide(self, request: CheckInput) -> Decision:
        verified = self._pending(request)
        if verified is None:
            header = self._credential(request)
            if isinstance(header, Decision):
                return header
            try:
                verified = await self._verifier.verify(
                    bearer_token(header, self.settings.max_token_bytes)
                )
            except TokenError as exc:
                return self._denials[exc.reason]
        if self._revocation is not None:
            reason = await self._revocation.check(verified.claims)
            if reason is not None:
                return self._denials[reason]
        return self._allow(verified)

    def _pending(self, request: CheckInput) -> VerifiedToken | None:
        """The token ``decide_now`` verified for ``request``, taken back (used once)."""
        note = request.pending
        if note is None:
            return None
        request.pending = None
        owner, verified = note
        return verified if owner is self else None

    def _credential(self, request: CheckInput) -> str | Decision:
        """The ``Authorization`` value to verify, or the decision reached without a token."""
        path = normalize(request.path)
        if path.invalid is not None:
            return self._denials["invalid_path"]
        if path.ambiguous is None and self._bypass.matches(path.path):
            return self._bypass_decision
        header = request.headers.get("authorization")
        if header is None:
            return self._denials["missing_token"]
        return header

    def _allow(self, verified: VerifiedToken) -> Decision:
        # A repeated token reuses one decision object end to end (and the adapters' encodings
        # of it), kept with its cached verification: built once per token, not per request.
        decision: Decision | None = verified.derived.get(self)
        if decision is None:
            decision = verified.derived[self] = self._allow_decision(verified)
        return decision

    def _allow_decision(self, verified: VerifiedToken) -> Decision:
        to_set: list[tuple[str, str]] = []
        to_remove: list[str] = []
        for claim, header, others in self._mappings:
            value = _header_value(verified.claims.get(claim))
            if value is _INVALID:
                return self._denials["invalid_claim_value"]
            if value is None:
                to_remove.append(header)
            else:
                to_set.append((header, value))
            to_remove.extend(others)
        return allow("ok", tuple(to_set), tuple(to_remove), verified.claims)


_INVALID = "\x00invalid"
# Not a field value (RFC 9110 5.5): a control character, or whitespace at either end, which each
# hop trims its own way (Envoy keeps it from a gRPC answer, its HTTP/1 parser drops it), so one
# claim would reach the upstream as two identities; or a lone surrogate, which has no UTF-8 form.
_NOT_A_FIELD_VALUE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]|^[ ]|[ ]$")


def _header_value(value: Any) -> str | None:
    """A claim as a header value (sent as UTF-8); ``_INVALID`` when it could smuggle a line, is
    not a field value, has no UTF-8 form (a lone surrogate) or is huge. An empty one sets none."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = json.dumps(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ",".join(value)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(text) > _MAX_HEADER_VALUE or _NOT_A_FIELD_VALUE.search(text):
        return _INVALID
    return text


def _spellings(header: str) -> tuple[str, ...]:
    """The header's name and, when it has dashes, its underscore spelling."""
    underscore = header.replace("-", "_")
    return (header,) if underscore == header else (header, underscore)
