"""The answer a policy gives when it refuses a request: JSON ``error``, ``reason``, ``request_id``.

Everything but the request id is fixed when the chain is built, and the refusal is counted
under the policy's name and the reason (the same snake_case word the body carries).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from gateway.asgi import Send
from gateway.policies.metrics import PolicyMetrics

__all__ = ["ERRORS", "Denial"]

ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "too_many_requests",
    431: "request_header_fields_too_large",
    503: "service_unavailable",
}


class Denial:
    __slots__ = ("_counter", "_headers", "error", "reason", "status")

    def __init__(
        self,
        metrics: PolicyMetrics,
        policy: str,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
    ):
        self.status = status
        self.reason = reason
        self.error = ERRORS.get(status, "denied")
        self._headers = tuple((n.lower().encode(), v.encode("latin-1")) for n, v in headers)
        self._counter = metrics.denial(policy, reason)

    async def send(
        self, send: Send, request_id: str, extra: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        self._counter.inc()
        body = json.dumps(
            {"error": self.error, "reason": self.reason, "request_id": request_id}
        ).encode()
        await send_json(send, self.status, body, (*self._headers, *extra), request_id)


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    request_id: str,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
