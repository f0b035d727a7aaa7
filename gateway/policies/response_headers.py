"""Headers policies add to the response, collected per request and sent by one wrapper.

CORS and rate limits both add headers to the answer. Each wrapping ``send`` would cost every
response message one more layer per policy; instead the first policy that needs it wraps
``send`` once and keeps the list in the scope, and later ones append to that list. The errors
the gateway answers itself (:mod:`gateway.app`) read the same list, so they carry the headers too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from gateway.asgi import Message, Scope, Send

__all__ = ["SCOPE_KEY", "with_response_headers"]

SCOPE_KEY = "doma.response_headers"
RawHeaders = list[tuple[bytes, bytes]]


def with_response_headers(scope: Scope, send: Send, headers: Iterable[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``headers`` (and any later policy's) to the response start."""
    pending: RawHeaders | None = scope.get(SCOPE_KEY)
    if pending is not None:
        pending.extend(headers)
        return send
    added: RawHeaders = list(headers)
    scope[SCOPE_KEY] = added

    # Not a coroutine: it hands back the wrapped send's awaitable, so each response message
    # passes through one coroutine frame fewer.
    def sender(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], *added]
        return send(message)

    return sender
