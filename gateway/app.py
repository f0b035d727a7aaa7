"""The gateway's ASGI application: request id, path normalization, route match, the route's chain.

Paths are normalized once, from ``raw_path`` (the ASGI ``path`` is already percent-decoded), and
that one normalized path is matched, authorized and forwarded. Ambiguous or invalid targets are
refused with 400 before any routing (security rule 1).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from authz.paths import normalize
from gateway.access_log import AccessLog
from gateway.asgi import Message, Receive, Scope, Send
from gateway.errors import CLIENT_GONE, GatewayError, InvalidPath, MethodNotAllowed
from gateway.extensions.endpoint import run_pre_route
from gateway.headers import request_id as make_request_id
from gateway.metrics import GatewayMetrics
from gateway.policies.response_headers import SCOPE_KEY as POLICY_RESPONSE_HEADERS
from gateway.proxy import ClientDisconnected
from gateway.responses import send_error
from gateway.runtime import RuntimeHolder

__all__ = ["GatewayApp"]

log = logging.getLogger("doma.gateway")

_VERSION_HEADERS = (b"accept-version", b"api-version")


class GatewayApp:
    def __init__(self, holder: RuntimeHolder, metrics: GatewayMetrics):
        self._holder = holder
        self._metrics = metrics
        # Written to only while the serving config asks for it (gateway.access_log).
        self.access = AccessLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        started = time.perf_counter()
        runtime = self._holder.current
        headers = scope["headers"]
        request_id = make_request_id(headers)
        header_version = None
        preflight = None
        for name, value in headers:
            if name in _VERSION_HEADERS:
                header_version = value.decode("latin-1").strip()
            elif name == b"access-control-request-method" and scope["method"] == "OPTIONS":
                preflight = value.decode("latin-1").strip()
        raw = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        target = raw.decode("latin-1")
        if query:
            target += "?" + query.decode("latin-1")

        status = 0
        response_started = 0.0
        # What the route's policies add to its answer (CORS, RateLimit), whichever answer it is:
        # the upstream's, a policy's refusal, or an error the gateway answers itself (a page can
        # only read an error, or its Retry-After, with its CORS headers).
        added: list[tuple[bytes, bytes]] = []
        scope[POLICY_RESPONSE_HEADERS] = added

        # Not a coroutine: it hands back send's awaitable, one frame fewer per response message.
        def capture(message: Message) -> Awaitable[None]:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = time.perf_counter()
                if added:
                    message["headers"] = [*message.get("headers", ()), *added]
            return send(message)

        domain = version = route = ""
        try:
            path = normalize(target)
            if path.invalid is not None:
                raise InvalidPath("invalid_path", detail=path.invalid)
            if path.ambiguous is not None:
                raise InvalidPath("ambiguous_path", detail=path.ambiguous)
            if runtime.extensions is not None and await run_pre_route(
                runtime.extensions, scope, path.path, request_id, capture
            ):
                return
            try:
                match = runtime.router.match(scope["method"], path.path, header_version)
            except MethodNotAllowed:
                # A preflight names its method and comes from a page: without Origin it is a
                # plain OPTIONS, for a route that does not allow it.
                if not preflight or all(name != b"origin" for name, _ in headers):
                    raise
                # A CORS preflight is about the method it names: that route's cors policy
                # answers it (a chain without one refuses it, see gateway.policies.chain).
                match = runtime.router.match(preflight, path.path, header_version)
                scope["doma.preflight"] = True
            domain, version, route = match.domain.name, match.version.name, match.route.name
            scope["doma.match"] = match
            scope["doma.request_id"] = request_id
            await runtime.chain(match.route)(scope, receive, capture)
        except GatewayError as exc:
            if status:
                raise
            await send_error(capture, exc, request_id)
        except ClientDisconnected:
            status = status or 499
        except asyncio.CancelledError as exc:
            if exc.args != (CLIENT_GONE,):
                raise
            # Ends here, like a body cut short: 499, with nothing left to send to anyone.
            status = 499
        finally:
            end = response_started or time.perf_counter()
            self._metrics.request(domain, version, route, status or 500, end - started)
            if runtime.config.gateway.access_log:
                # The path as sent, without its query: a query may carry credentials.
                self.access.write(
                    method=scope["method"], path=raw.decode("latin-1"), status=status or 500,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                    domain=domain, version=version, route=route, request_id=request_id,
                    client=(scope.get("client") or ("",))[0],
                )  # fmt: skip


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
