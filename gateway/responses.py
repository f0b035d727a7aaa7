"""JSON responses the gateway writes itself: errors with the request id, sent as pure ASGI."""

from __future__ import annotations

import json
from collections.abc import Iterable

from gateway.asgi import Send
from gateway.errors import GatewayError

__all__ = ["error_body", "send_error", "send_json"]


def error_body(exc: GatewayError, request_id: str) -> bytes:
    payload: dict[str, object] = {
        "error": exc.error,
        "reason": exc.reason,
        **exc.fields,
        "request_id": request_id,
    }
    return json.dumps(payload).encode()


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: GatewayError, request_id: str) -> None:
    headers = [(name.encode(), value.encode()) for name, value in exc.headers]
    headers.append((b"x-request-id", request_id.encode()))
    await send_json(send, exc.status, error_body(exc, request_id), headers)
