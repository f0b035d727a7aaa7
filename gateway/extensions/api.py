"""What an extension sees and answers: a :class:`Call` in, an :class:`Outcome` (or None) out.

An extension is any object with ``async def __call__(self, call: Call) -> Outcome | None``,
made by a factory ``factory(settings) -> extension`` that the routes YAML names
(``module:factory``) or a Python entry point in the group ``doma_gateway.extensions`` provides.
None means "carry on, change nothing".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.headers import HOP_BY_HOP, is_field_value

__all__ = [
    "BUILTIN_POINTS",
    "Call",
    "Extension",
    "Factory",
    "Outcome",
    "add_headers",
    "deny",
    "route_to",
]

# Points the gateway itself runs; domains declare more as "<domain>.<name>".
BUILTIN_POINTS = ("pre_route", "pre_upstream", "post_response")
_REASON = re.compile(r"^[a-z][a-z0-9_]*\Z")
_HEADER = re.compile(r"^[a-z0-9][a-z0-9\-]*\Z")
# Headers the gateway owns: the message's framing, the hop-by-hop ones (meaningful to one
# connection only) and the request id it hands the client, the upstream and its logs.
_FORBIDDEN = frozenset(
    {"host", "content-length", "x-request-id"} | {name.decode() for name in HOP_BY_HOP}
)


@dataclass(frozen=True, slots=True)
class Call:
    """One request at one extension point. Headers are lower-case, repeated values joined."""

    point: str
    method: str
    path: str
    headers: Mapping[str, str]
    request_id: str = ""
    # Known once the route matched (every point but pre_route).
    domain: str = ""
    version: str = ""
    route: str = ""
    upstream: str = ""
    # Verified token claims, when an auth policy ran.
    claims: Mapping[str, Any] | None = None
    # post_response only: the upstream's status and headers.
    status: int = 0
    response_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A veto (``status`` and ``reason``), headers to add, or another upstream; or several."""

    status: int = 0
    reason: str = ""
    # Request headers at pre_route, pre_upstream and domain points; response headers at
    # post_response. Set, replacing a header of the same name.
    headers: tuple[tuple[str, str], ...] = ()
    upstream: str | None = None

    @property
    def denied(self) -> bool:
        return self.status != 0

    def __post_init__(self) -> None:
        if self.status and not (400 <= self.status <= 599):
            raise ValueError(f"a denial's status is 4xx or 5xx, got {self.status}")
        if self.status and not _REASON.match(self.reason):
            raise ValueError(f"a denial's reason is a snake_case word, got {self.reason!r}")
        for name, value in self.headers:
            if not _HEADER.match(name):
                raise ValueError(f"{name!r} is not a lower-case header name")
            if name in _FORBIDDEN:
                raise ValueError(
                    f"{name!r} frames the message, concerns one connection only or is the "
                    "gateway's own; an extension cannot set it"
                )
            if not _field_value(value):
                raise ValueError(
                    f"header {name!r}: a value is Latin-1 text without control characters "
                    "(HTAB aside), so it stays one header line"
                )


def _field_value(value: str) -> bool:
    try:
        encoded = value.encode("latin-1")  # as the gateway sends it
    except UnicodeEncodeError:
        return False
    return is_field_value(encoded)


def deny(reason: str, status: int = 403) -> Outcome:
    """Stop the request: no later extension runs, the client gets ``status`` and ``reason``."""
    return Outcome(status=status, reason=reason)


def add_headers(**headers: str) -> Outcome:
    """Set headers (``x_promo_tag="spring"`` sets ``x-promo-tag``)."""
    return Outcome(headers=tuple((k.replace("_", "-").lower(), v) for k, v in headers.items()))


def route_to(upstream: str) -> Outcome:
    """Send the request to another upstream of the routes YAML."""
    return Outcome(upstream=upstream)


class Extension(Protocol):
    async def __call__(self, call: Call) -> Outcome | None: ...


Factory = Callable[[Mapping[str, Any]], Extension]
