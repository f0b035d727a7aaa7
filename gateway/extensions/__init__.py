"""Extensions: behaviour added at named points of the request flow without touching the core.

This package's top level is the whole API an extension needs::

    from gateway.extensions import Call, Outcome, add_headers, deny, route_to

See docs/extensions.md for writing, registering and testing one.
"""

from gateway.extensions.api import (
    BUILTIN_POINTS,
    Call,
    Extension,
    Factory,
    Outcome,
    add_headers,
    deny,
    route_to,
)

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
