"""Where the extension points sit in the request flow.

``pre_route`` runs in the app, after path normalization and before route matching: it sees the
method, the normalized path and the headers. The others run in :class:`ExtensionEndpoint`, the
innermost step of every route's chain (after every policy, so auth's claims are known):
``pre_upstream``, then the domain points that apply to the route, then the upstream, and
``post_response`` when the upstream's status and headers are in, before anything reaches the
client. Extensions get the verified claims read-only (see :mod:`gateway.extensions.claims`).
Added request headers replace same-named ones; another upstream goes to the proxy in
``scope["doma.upstream"]``. A denial at ``post_response`` replaces the upstream's answer, whose
body is then discarded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from gateway.asgi import ASGIApp, Message, Receive, Scope, Send
from gateway.extensions.api import Call, Outcome
from gateway.extensions.host import ExtensionHost, Verdict
from gateway.policies.auth import CLAIMS
from gateway.policies.denial import ERRORS, send_json

__all__ = ["UPSTREAM", "ExtensionEndpoint", "run_pre_route"]

UPSTREAM = "doma.upstream"


def _joined(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        joined[key] = f"{joined[key]},{text}" if key in joined else text
    return joined


def _apply(scope: Scope, verdict: Verdict) -> None:
    if verdict.headers:
        names = {name.encode() for name, _ in verdict.headers}
        headers = [(n, v) for n, v in scope["headers"] if n not in names]
        headers.extend((n.encode(), v.encode("latin-1")) for n, v in dict(verdict.headers).items())
        scope["headers"] = headers
    if verdict.upstream is not None:
        scope[UPSTREAM] = verdict.upstream


async def _refuse(send: Send, denial: Outcome, extension: str, request_id: str) -> None:
    body = {
        "error": ERRORS.get(denial.status, "denied"),
        "reason": denial.reason,
        "extension": extension,
        "request_id": request_id,
    }
    await send_json(send, denial.status, json.dumps(body).encode(), (), request_id)


async def run_pre_route(
    host: ExtensionHost, scope: Scope, path: str, request_id: str, send: Send
) -> bool:
    """Runs ``pre_route``; True when it refused the request (the answer is sent)."""
    plan = host.plan("pre_route")
    if plan is None:
        return False
    call = Call("pre_route", scope["method"], path, _joined(scope["headers"]), request_id)
    verdict = await host.run(plan, call)
    if verdict.denial is not None:
        await _refuse(send, verdict.denial, verdict.extension, request_id)
        return True
    _apply(scope, verdict)
    return False


class ExtensionEndpoint:
    def __init__(self, app: ASGIApp, *, host: ExtensionHost):
        self.app = app
        self._host = host
        self._post = host.plan("post_response")

    def _call(self, point: str, scope: Scope, **extra: Any) -> Call:
        match = scope["doma.match"]
        claims = self._host.claims.view(scope.get(CLAIMS))
        return Call(
            point,
            scope["method"],
            match.path,
            _joined(scope["headers"]),
            scope.get("doma.request_id", ""),
            match.domain.name,
            match.version.name,
            match.route.name,
            scope.get(UPSTREAM) or match.route.upstream,
            claims,
            **extra,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = scope["doma.match"]
        request_id = scope.get("doma.request_id", "")
        for plan in self._host.request_plans(match.domain.name, match.route.name):
            verdict = await self._host.run(plan, self._call(plan.name, scope))
            if verdict.denial is not None:
                await _refuse(send, verdict.denial, verdict.extension, request_id)
                return
            _apply(scope, verdict)
        post = self._post
        if post is None:
            await self.app(scope, receive, send)
            return

        replaced = False

        async def respond(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                call = self._call(
                    "post_response",
                    scope,
                    status=message["status"],
                    response_headers=_joined(message.get("headers", [])),
                )
                verdict = await self._host.run(post, call)
                if verdict.denial is not None:
                    replaced = True
                    await _refuse(send, verdict.denial, verdict.extension, request_id)
                    return
                if verdict.headers:
                    names = {name.encode() for name, _ in verdict.headers}
                    headers = [(n, v) for n, v in message["headers"] if n not in names]
                    headers.extend(
                        (n.encode(), v.encode("latin-1")) for n, v in dict(verdict.headers).items()
                    )
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, respond)
