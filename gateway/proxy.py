"""The endpoint at the end of every route's chain: forwards to the upstream and streams back.

Small bodies (known length up to ``gateway.buffer_bytes``) are read whole and sent with a
``Content-Length`` both ways: one ASGI message instead of a stream costs far less, and a
whole request body can be replayed on retry. Larger or unknown-length bodies stream through
chunk by chunk and are never held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import httpx

from gateway.asgi import Message, Receive, Scope, Send
from gateway.errors import (
    BadGateway,
    CircuitOpen,
    GatewayError,
    InvalidFraming,
    ResponseCutShort,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.headers import ForwardedFor, strip_request_headers, strip_response_headers
from gateway.metrics import GatewayMetrics
from gateway.router import RouteMatch
from gateway.routes_model import GatewaySettings
from gateway.upstream_exchange import UpstreamResponse, exchange_for
from gateway.upstream_pool import Endpoint, UpstreamPool

__all__ = ["ClientDisconnected", "Proxy", "map_upstream_errors"]

log = logging.getLogger("doma.gateway.proxy")

_NO_BODY_STATUS = frozenset({204, 304})


class ClientDisconnected(Exception):
    """The client went away while its request body was being read."""


# What the transports raise when an upstream fails: a timeout, a refused or reset connection,
# an answer that is not HTTP.
UPSTREAM_FAILURES = (TimeoutError, httpx.TransportError, httpx.DecodingError)


@contextlib.contextmanager
def map_upstream_errors(upstream: str) -> Iterator[None]:
    """Translate transport exceptions into gateway errors that carry their HTTP status."""
    try:
        yield
    except GatewayError:
        raise
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise UpstreamTimeout("upstream_timeout", upstream=upstream) from exc
    except httpx.ConnectError as exc:
        raise UpstreamUnavailable("upstream_connect_failed", upstream=upstream) from exc
    except UPSTREAM_FAILURES as exc:
        raise BadGateway("upstream_protocol_error", upstream=upstream) from exc


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _stream_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _replay(first: Message, receive: Receive) -> Receive:
    """``receive`` that hands out ``first`` once before reading on."""
    pending = [first]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


class Proxy:
    """Pure ASGI endpoint; reads the route match the app put in ``scope['doma.match']``."""

    def __init__(
        self,
        pools: Mapping[str, UpstreamPool],
        transport: httpx.AsyncBaseTransport,
        metrics: GatewayMetrics,
        settings: GatewaySettings,
        *,
        rng: Callable[[float, float], float] = random.uniform,
    ):
        self._pools = pools
        self._metrics = metrics
        self._buffer = settings.buffer_bytes
        self._forwarded = ForwardedFor(settings.trusted_proxies)
        self._rng = rng
        # Chosen once: the default transport takes plain values, others get httpx objects.
        self._send_upstream = exchange_for(transport)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match: RouteMatch = scope["doma.match"]
        request_id: str = scope["doma.request_id"]
        # An extension may have chosen another upstream (gateway.extensions.endpoint.UPSTREAM).
        pool = self._pools[scope.get("doma.upstream") or match.route.upstream]
        method: str = scope["method"]
        client_headers: list[tuple[bytes, bytes]] = scope["headers"]

        length: int | None = None
        chunked = False
        host = b""
        for name, value in client_headers:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"host":
                host = value
        if chunked and scope.get("http_version") == "1.0":
            # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; a proxy in front
            # may have read this body another way, so it is refused, never re-framed.
            raise InvalidFraming("transfer_encoding_in_http_1_0")
        body: bytes | None
        if length is None and not chunked:
            body = b""
        elif length is not None and length <= self._buffer:
            body = await _read_body(receive)
        else:
            # The first piece of a streamed body is read before the upstream is contacted: a
            # request whose framing breaks at once (a bad chunk size) never reaches it.
            first = await receive()
            if first["type"] == "http.disconnect":
                raise ClientDisconnected
            receive = _replay(first, receive)
            body = None

        client = scope.get("client")
        peer = client[0] if client else ""
        trusted = self._forwarded.trusted(peer)
        headers = strip_request_headers(client_headers, trusted_peer=trusted)
        headers.extend(
            self._forwarded.headers(client_headers, peer, scope["scheme"], host, trusted=trusted)
        )
        headers.append((b"x-request-id", request_id.encode()))
        if body is None and length is not None:
            headers.append((b"content-length", str(length).encode()))
        query: bytes = scope.get("query_string", b"")
        target = match.upstream_path + ("?" + query.decode("latin-1") if query else "")

        response = await self._exchange(pool, method, target, headers, host, body, receive)
        await self._respond(response, method, match, request_id, send, receive)

    async def _exchange(
        self,
        pool: UpstreamPool,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        client_host: bytes,
        body: bytes | None,
        receive: Receive,
    ) -> UpstreamResponse:
        settings = pool.settings
        policy = settings.retries
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeouts.total
        replayable = body is not None
        retries_left = policy.attempts if replayable else 0
        retry = 0
        retrying = False
        tried: tuple[Endpoint, ...] = ()
        pool.admit()
        pool.active += 1
        try:
            while True:
                endpoint = pool.pick(tried)
                request_headers = headers
                if settings.preserve_host and client_host:
                    request_headers = [*headers, (b"host", client_host)]
                content = body if body is not None else _stream_body(receive)
                delay = self._rng(0.0, min(policy.backoff.max, policy.backoff.base * 2**retry))
                try:
                    response = await self._attempt(
                        pool, endpoint, method, target, request_headers, content, deadline
                    )
                except (UpstreamTimeout, UpstreamUnavailable, BadGateway) as exc:
                    if (
                        isinstance(exc, CircuitOpen)
                        # A retry must start before the total deadline, backoff included.
                        or loop.time() + delay >= deadline
                        or not self._retry_error(exc, method, retries_left, pool)
                    ):
                        raise
                else:
                    if not (
                        response.status in policy.on_status
                        and method in policy.methods
                        and retries_left > 0
                        and loop.time() + delay < deadline
                        and pool.may_retry()
                    ):
                        return response
                    await response.aclose()
                finally:
                    if retrying:
                        pool.retries_in_flight -= 1
                        retrying = False
                retry += 1
                retries_left -= 1
                tried = (*tried, endpoint)
                self._metrics.retry(pool.name)
                pool.retries_in_flight += 1
                retrying = True
                await asyncio.sleep(delay)
        finally:
            pool.active -= 1

    def _retry_error(
        self, exc: UpstreamError, method: str, retries_left: int, pool: UpstreamPool
    ) -> bool:
        if retries_left <= 0 or not pool.may_retry():
            return False
        policy = pool.settings.retries
        if exc.reason == "upstream_connect_failed":
            # Nothing was sent, so even a non-idempotent request is safe to try elsewhere.
            return policy.on_connect_failure
        if isinstance(exc, UpstreamTimeout):
            return policy.on_timeout and method in policy.methods
        return method in policy.methods and 502 in policy.on_status

    async def _attempt(
        self,
        pool: UpstreamPool,
        endpoint: Endpoint,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes],
        deadline: float,
    ) -> UpstreamResponse:
        breaker = pool.breaker
        if breaker is not None:
            breaker.admit()
        endpoint.outstanding += 1
        try:
            try:
                timeouts = pool.settings.timeouts
                with map_upstream_errors(pool.name):
                    response = await self._send_upstream(
                        method,
                        endpoint.url + target,
                        headers,
                        body,
                        connect=timeouts.connect,
                        read=timeouts.read,
                        deadline=deadline,
                    )
            except UpstreamError as exc:
                pool.record(endpoint, ok=False)
                self._metrics.upstream_error(pool.name, exc.reason)
                if breaker is not None:
                    breaker.record(ok=False)
                raise
            status = response.status
            failed = status >= 500
            pool.record(endpoint, ok=not failed)
            if failed:
                self._metrics.upstream_error(pool.name, f"status_{status}")
            if breaker is not None:
                breaker.record(ok=not breaker.failed_status(status))
            return response
        finally:
            endpoint.outstanding -= 1
            if breaker is not None:
                breaker.settle()

    async def _respond(
        self,
        response: UpstreamResponse,
        method: str,
        match: RouteMatch,
        request_id: str,
        send: Send,
        receive: Receive,
    ) -> None:
        status = response.status
        headers, length = strip_response_headers(response.headers)
        headers.extend(match.response_headers)
        headers.append((b"x-request-id", request_id.encode()))

        if method == "HEAD" or status in _NO_BODY_STATUS or status < 200:
            await response.aclose()
            if length is not None and method == "HEAD":
                headers.append((b"content-length", str(length).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        # Already in memory: the HTTP/1.1 transport's small answers, or a test double's body.
        body = response.buffered_body()
        if body is not None or (length is not None and length <= self._buffer):
            try:
                if body is None:
                    with map_upstream_errors(match.route.upstream):
                        body = b"".join([chunk async for chunk in response.chunks()])
            finally:
                await response.aclose()
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        scope_done = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, scope_done))
        try:
            async for chunk in response.chunks():
                if scope_done.is_set():
                    log.info("client went away mid-response", extra={"request_id": request_id})
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except UPSTREAM_FAILURES as exc:
            upstream = match.route.upstream
            log.warning(
                "upstream failed mid-response",
                extra={"request_id": request_id, "upstream": upstream, "error": type(exc).__name__},
            )
            self._metrics.upstream_error(upstream, "upstream_failed_mid_response")
            raise ResponseCutShort from exc
        finally:
            watcher.cancel()
            await response.aclose()


async def _watch_disconnect(receive: Receive, done: asyncio.Event) -> None:
    """Notices a client that hangs up during a long (e.g. SSE) response."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            done.set()
            return
