"""One attempt at the upstream, in plain values: the seam between the proxy and its transport.

The proxy hands over a method, a URL, the header list it built and a body (bytes, or an async
iterator of chunks for a streamed one), and gets back a status, the raw response headers and the
body. The default HTTP/1.1 transport speaks this directly (:class:`DirectTransport`), so the hot
path builds no ``httpx.Request``/``httpx.Response`` and normalises no ``httpx.Headers``: on the
bare route that was a sixth of the gateway's CPU. Any other ``httpx.AsyncBaseTransport`` (aiohttp,
httpcore, ``httpx.MockTransport`` in tests) is reached through :class:`HttpxExchange`, which builds
the httpx objects as before. Both raise httpx's exceptions, so the proxy maps errors in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

import httpx

__all__ = ["DirectTransport", "Exchange", "HttpxExchange", "UpstreamResponse", "exchange_for"]

RawHeaders = Sequence[tuple[bytes, bytes]]
_URL_CACHE_SIZE = 4096


class UpstreamResponse(Protocol):
    """An upstream's answer once its head has arrived; the body is read or closed after."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> RawHeaders: ...

    def buffered_body(self) -> bytes | None:
        """The whole body when it is already in memory, else None (read it with ``chunks``)."""

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Give the connection back (or close it); safe to call more than once."""


class Exchange(Protocol):
    """Sends one request and waits for the response head, at most until ``deadline``.

    ``deadline`` is event-loop time; ``connect``/``read`` bound a single connect or read.
    """

    async def __call__(
        self,
        method: str,
        url: str,
        headers: RawHeaders,
        body: bytes | AsyncIterable[bytes],
        *,
        connect: float | None,
        read: float | None,
        deadline: float,
    ) -> UpstreamResponse: ...


@runtime_checkable
class DirectTransport(Protocol):
    """A transport that takes plain values (``Http1Transport``): no httpx objects in between."""

    @property
    def exchange(self) -> Exchange: ...


def exchange_for(transport: httpx.AsyncBaseTransport) -> Exchange:
    """The transport's own plain-value path when it has one, else one through httpx objects."""
    if isinstance(transport, DirectTransport):
        return transport.exchange
    return HttpxExchange(transport)


class HttpxExchange:
    """Reaches any ``httpx.AsyncBaseTransport`` by building an ``httpx.Request`` per attempt."""

    def __init__(self, transport: httpx.AsyncBaseTransport):
        self._transport = transport
        self._urls: dict[str, httpx.URL] = {}

    def _url(self, text: str) -> httpx.URL:
        # Parsing a URL is a good share of building a request; paths repeat, so keep them.
        url = self._urls.get(text)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self._urls[text] = httpx.URL(text)
        return url

    async def __call__(
        self,
        method: str,
        url: str,
        headers: RawHeaders,
        body: bytes | AsyncIterable[bytes],
        *,
        connect: float | None,
        read: float | None,
        deadline: float,
    ) -> UpstreamResponse:
        extensions: dict[str, object] = {
            "timeout": {"connect": connect, "read": read, "write": read, "pool": connect}
        }
        request = httpx.Request(
            method,
            self._url(url),
            headers=list(headers),
            content=(body or None) if isinstance(body, bytes) else body,
            extensions=extensions,
        )
        async with asyncio.timeout_at(deadline):
            response = await self._transport.handle_async_request(request)
        return _HttpxResponse(response)


class _HttpxResponse:
    """An ``httpx.Response`` seen through :class:`UpstreamResponse`."""

    __slots__ = ("_response",)

    def __init__(self, response: httpx.Response):
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> RawHeaders:
        return self._response.headers.raw

    def buffered_body(self) -> bytes | None:
        response = self._response
        # The HTTP/1.1 transport's small answers, or a test double's body given as content.
        buffered = getattr(response.stream, "buffered_body", None)
        if buffered is not None:
            body: bytes | None = buffered()
            return body
        try:
            return response.content
        except httpx.ResponseNotRead:
            return None

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.aiter_raw()

    async def aclose(self) -> None:
        await self._response.aclose()
