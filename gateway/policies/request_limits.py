"""Request limits: header size, body size and a method allow-list, refused before the upstream.

The header size is the sum of every name and value plus four bytes each (``: `` and CRLF), as
on the wire: over ``max_header_bytes`` is 431. A ``Content-Length`` over ``max_body_bytes`` is
413 at once, before a byte of the body is read; a chunked body is counted as it streams and
the request fails with 413 the moment the count passes the limit (the upstream exchange is
abandoned, the body never sits in memory). A method outside ``methods`` is 405 with ``Allow``.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.yamlnodes import Node
from gateway.asgi import ASGIApp, Message, Receive, Scope, Send
from gateway.errors import PayloadTooLarge
from gateway.policies.denial import Denial
from gateway.policies.metrics import PolicyMetrics
from gateway.policies.spec import ChainContext, PolicySpec
from gateway.upstream_loader import parse_methods

__all__ = ["SPEC", "RequestLimitsPolicy", "RequestLimitsSettings"]

_KEYS = ("max_header_bytes", "max_body_bytes", "methods")


@dataclass(frozen=True, slots=True)
class RequestLimitsSettings:
    max_header_bytes: int | None = None
    max_body_bytes: int | None = None
    methods: frozenset[str] | None = None


def parse(node: Node | None, item: Node) -> RequestLimitsSettings:
    if node is None:
        raise item.error("request_limits needs max_header_bytes, max_body_bytes or methods")
    m = node.mapping(_KEYS)
    headers = m.get("max_header_bytes")
    body = m.get("max_body_bytes")
    methods = m.get("methods")
    settings = RequestLimitsSettings(
        max_header_bytes=headers.int(minimum=256, maximum=1 << 20) if headers else None,
        max_body_bytes=body.int(minimum=0, maximum=1 << 40) if body is not None else None,
        methods=parse_methods(methods) if methods is not None else None,
    )
    if settings == RequestLimitsSettings():
        raise node.error("request_limits needs max_header_bytes, max_body_bytes or methods")
    return settings


class RequestLimitsPolicy:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: RequestLimitsSettings,
        metrics: PolicyMetrics,
    ):
        self.app = app
        self._max_headers = settings.max_header_bytes
        self._max_body = settings.max_body_bytes
        methods = settings.methods
        if methods is not None and "GET" in methods:
            methods = methods | {"HEAD"}
        self._methods = methods
        allow = ", ".join(sorted(methods)) if methods else ""
        self._method = Denial(
            metrics, "request_limits", 405, "method_not_allowed", [("allow", allow)]
        )
        self._headers = Denial(metrics, "request_limits", 431, "headers_too_large")
        self._body = Denial(metrics, "request_limits", 413, "body_too_large")
        self._body_counter = metrics.denial("request_limits", "body_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope["doma.request_id"]
        if self._methods is not None and scope["method"] not in self._methods:
            await self._method.send(send, request_id)
            return
        headers = scope["headers"]
        if self._max_headers is not None:
            size = sum(len(n) + len(v) + 4 for n, v in headers)
            if size > self._max_headers:
                await self._headers.send(send, request_id)
                return
        limit = self._max_body
        if limit is None:
            await self.app(scope, receive, send)
            return
        length = chunked = None
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        if length is not None and chunked is None:
            # Optional whitespace around the value is allowed (RFC 9110 5.5); uvicorn has
            # checked the digits and framed the body already.
            length = length.strip(b" \t")
            if not length.isdigit() or int(length) > limit:
                await self._body.send(send, request_id)
                return
            # The server delivers exactly Content-Length bytes: nothing more to count.
            await self.app(scope, receive, send)
            return
        if chunked is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._counting(receive, limit), send)

    def _counting(self, receive: Receive, limit: int) -> Receive:
        seen = 0
        counter = self._body_counter

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    counter.inc()
                    raise PayloadTooLarge("body_too_large", limit=limit)
            return message

        return counted


def build(app: ASGIApp, settings: RequestLimitsSettings, context: ChainContext) -> ASGIApp:
    return RequestLimitsPolicy(app, settings=settings, metrics=context.resources.metrics)


SPEC = PolicySpec(parse=parse, build=build)
