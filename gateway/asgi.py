"""ASGI type aliases shared by the gateway's modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["CONNECTION", "ASGIApp", "Message", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The scope key of a dict that lives as long as the client's connection: state a policy keeps
# between one client's requests. The edge's server protocol sets it; under another server it
# may be missing, and a policy then keeps nothing.
CONNECTION = "doma.connection"
