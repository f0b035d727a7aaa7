"""The registered claims of a token whose signature verified (RFC 7519 section 4.1).

The checks, their order and their deny reasons are those of PyJWT 2.x's ``decode`` with the
options the verifier always used (``require`` = the issuer's required claims, its audiences with
``strict_aud`` off, its issuer, its leeway): required claims, ``iat``, ``nbf``, ``exp``, ``iss``,
``aud``, then the types of ``sub`` and ``jti``. Time claims are compared after truncation to whole
seconds, as PyJWT's ``int()`` did.

Stricter than PyJWT on purpose: it read a time claim with ``int()``, so it accepted a JSON string
(``"exp": "99999999999"``, even ``" 9_999_999_999 "``) and a boolean (``"nbf": true`` is 1) as
a NumericDate. Here a time claim is a JSON number or it is refused, with the reason PyJWT gave a
value it could not read (``malformed_token`` for ``exp`` and ``nbf``, ``invalid_issued_at`` for
``iat``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from authz.settings import IssuerSettings

__all__ = ["claims_deny_reason", "numeric_date"]


def numeric_date(value: object) -> int | None:
    """A NumericDate in whole seconds, or None when ``value`` is not a finite JSON number."""
    # type() rather than isinstance(): bool is an int subclass and must not count as a date.
    if type(value) is int:
        return value
    if type(value) is float and math.isfinite(value):
        return int(value)
    return None


def claims_deny_reason(claims: Mapping[str, Any], issuer: IssuerSettings, now: float) -> str | None:
    """The deny reason of the first claim check that fails at epoch second ``now``, else None."""
    for claim in issuer.required_claims:
        if claims.get(claim) is None:
            return "missing_claim"
    leeway = issuer.leeway
    if "iat" in claims:
        issued_at = numeric_date(claims["iat"])
        if issued_at is None:
            return "invalid_issued_at"
        if issued_at > now + leeway:
            return "token_not_yet_valid"
    if "nbf" in claims:
        not_before = numeric_date(claims["nbf"])
        if not_before is None:
            return "malformed_token"
        if not_before > now + leeway:
            return "token_not_yet_valid"
    if "exp" in claims:
        expires = numeric_date(claims["exp"])
        if expires is None:
            return "malformed_token"
        if expires <= now - leeway:
            return "token_expired"
    if "iss" not in claims:
        return "missing_claim"
    if claims["iss"] != issuer.issuer:
        return "invalid_issuer"
    reason = _audience_deny_reason(claims.get("aud"), issuer.audiences)
    if reason is not None:
        return reason
    # Both end up in headers and revocation keys: anything but a string is not a usable id.
    if "sub" in claims and not isinstance(claims["sub"], str):
        return "invalid_token"
    if "jti" in claims and not isinstance(claims["jti"], str):
        return "invalid_token"
    return None


def _audience_deny_reason(audience: object, accepted: tuple[str, ...]) -> str | None:
    # Absent, null, "", [], 0 and false all count as no audience at all.
    if not audience:
        return "missing_claim"
    if isinstance(audience, str):
        return None if audience in accepted else "invalid_audience"
    if not isinstance(audience, list) or not all(isinstance(value, str) for value in audience):
        return "invalid_audience"
    if any(value in audience for value in accepted):
        return None
    return "invalid_audience"
