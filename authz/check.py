"""What the decision core takes in and gives back: plain data, no transport types."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from authz.tokens import CredentialMemo

__all__ = ["CheckInput", "Decider", "Decision", "RepeatDecider", "allow", "deny"]


# Not frozen: every check builds one, and a frozen dataclass's __init__ (one object.__setattr__
# per field) costs four times as much. Adapters build it and nobody changes its inputs after.
@dataclass(slots=True)
class CheckInput:
    """One request to authorize.

    ``path`` is the raw request target as sent (query included, not decoded). ``headers`` has
    lower-case names; a repeated header arrives joined with ``,`` (as Envoy does).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    source_principal: str = ""
    # The client connection's memo of its last credential, when the adapter keeps one per
    # connection (see CredentialMemo); None: every check parses and looks its token up.
    credential_memo: CredentialMemo | None = None
    # The decision core's note from ``decide_now`` to ``decide`` on this request: (the core,
    # the token it verified before finding it must wait for the revocation store), so the
    # token is not verified, nor counted in the token cache, twice. Not an input: adapters never
    # set it, and ``decide`` takes it back.
    pending: Any = field(default=None, init=False, compare=False, repr=False)


# eq=False: decisions are compared and hashed by identity. Denials and per-token allows are
# reused objects, so each adapter encodes a decision once and keeps the bytes in ``wire``.
@dataclass(frozen=True, slots=True, eq=False)
class Decision:
    allowed: bool
    status: int
    reason: str
    # Allowed: headers to set on the upstream request (overwriting client values) and to remove.
    headers_to_set: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    # Denied: headers and JSON body of the response sent to the client.
    response_headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    claims: Mapping[str, Any] | None = field(default=None, repr=False)
    # An adapter's encoding of this decision, by the adapter's key ("grpc", ("http", True), the
    # gateway's auth policy, ...):
    # it lives exactly as long as the decision, so no cache of encodings needs a bound of its own.
    # Threads may race to fill an entry; they write equal values.
    wire: dict[object, Any] = field(default_factory=dict, repr=False)


_ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    408: "request_timeout",
    431: "request_header_fields_too_large",
    503: "unavailable",
}
_BEARER_CHALLENGE = 'Bearer realm="doma-gateway", error="invalid_token"'


class Decider(Protocol):
    """Anything that decides checks: the core, or the core wrapped with the inter-domain rule."""

    def decide_now(self, request: CheckInput) -> Decision | None:
        """The decision when it needs no I/O, else None (then ``decide`` must be awaited)."""
        ...

    async def decide(self, request: CheckInput) -> Decision: ...


class RepeatDecider(Decider, Protocol):
    """A decider that also answers a connection's repeated credential without a CheckInput (the
    core's ``decide_repeat``), for requests that name no mesh caller."""

    def decide_repeat(self, memo: CredentialMemo, header: str, path: str) -> Decision | None: ...


def deny(status: int, reason: str) -> Decision:
    """A denial with a JSON body ``{"error", "reason"}``; 401s carry a Bearer challenge."""
    body = json.dumps({"error": _ERRORS.get(status, "denied"), "reason": reason}).encode()
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    if status == 401:
        headers += (("www-authenticate", _BEARER_CHALLENGE),)
    return Decision(False, status, reason, response_headers=headers, body=body)


def allow(
    reason: str,
    headers_to_set: tuple[tuple[str, str], ...],
    headers_to_remove: tuple[str, ...],
    claims: Mapping[str, Any] | None = None,
) -> Decision:
    return Decision(True, 200, reason, headers_to_set, headers_to_remove, claims=claims)
