"""In-process authentication with the authz decision core, the one ``doma-gateway authz`` runs.

Identity headers (the targets of ``claims_to_headers``) are removed from every request first,
on bypassed routes too (security rule 3); a required route then asks the core for a decision
and either answers the denial itself or forwards with the headers the decision sets.
"""

from __future__ import annotations

import json
from typing import Protocol

from authz.check import CheckInput, Decision
from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.responses import send_json

__all__ = ["AuthPolicy", "Authorizer"]


class Authorizer(Protocol):
    async def decide(self, request: CheckInput) -> Decision: ...


class AuthPolicy:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authorizer: Authorizer | None,
        required: bool,
        identity_headers: tuple[str, ...],
    ):
        if required and authorizer is None:
            raise ValueError("a route that requires auth needs an authorizer")
        self.app = app
        self._authorizer = authorizer
        self._required = required
        names = set()
        for header in identity_headers:
            names.update({header.encode(), header.replace("-", "_").encode()})
        self._strip = frozenset(names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(n, v) for n, v in scope["headers"] if n not in self._strip]
        if self._required and self._authorizer is not None:
            decision = await self._authorizer.decide(_check_input(scope))
            if not decision.allowed:
                await _deny(decision, scope["doma.request_id"], send)
                return
            if decision.headers_to_remove:
                removed = {name.encode() for name in decision.headers_to_remove}
                headers = [(n, v) for n, v in headers if n not in removed]
            headers.extend(
                (name.encode(), value.encode()) for name, value in decision.headers_to_set
            )
        scope = dict(scope)
        scope["headers"] = headers
        await self.app(scope, receive, send)


def _check_input(scope: Scope) -> CheckInput:
    joined: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        # Repeated headers are joined with "," as Envoy does, so the core sees every value.
        joined[key] = f"{joined[key]},{text}" if key in joined else text
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    target = raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    return CheckInput(method=scope["method"], path=target, headers=joined)


async def _deny(decision: Decision, request_id: str, send: Send) -> None:
    try:
        payload = json.loads(decision.body) if decision.body else {}
    except ValueError:
        payload = {}
    payload["request_id"] = request_id
    headers = [
        (name.encode(), value.encode())
        for name, value in decision.response_headers
        if name.lower() != "content-type"
    ]
    headers.append((b"x-request-id", request_id.encode()))
    await send_json(send, decision.status, json.dumps(payload).encode(), headers)
