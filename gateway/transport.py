"""An httpx transport over aiohttp's connection pool, built for a proxy.

httpx stays the client API (requests, responses, exceptions; respx and ``httpx.MockTransport``
work in tests), while the connections come from aiohttp, whose pool is several times faster
than httpcore's under concurrency (httpx issue 3215). Unlike the general-purpose
``httpx-aiohttp`` transport, this one sends the request target exactly as given (``yarl`` would
otherwise re-quote ``%3A`` to ``:``: the upstream must see the path that was matched), adds no
headers of its own (no ``Accept-Encoding``: a client that did not ask for gzip must not get it),
keeps no cookies and never decompresses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

__all__ = ["AiohttpTransport", "build_transport"]


@contextlib.contextmanager
def _map_aiohttp_errors() -> Iterator[None]:
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc)) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timeout") from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected") from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.ReadError(str(exc)) from exc
    except aiohttp.ClientResponseError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx.NetworkError(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _map_aiohttp_errors():
            # iter_any hands over whatever arrived, so chunked and SSE bodies flush as they come.
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # A fully read response returns its connection to the pool; a half-read one closes it.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections_per_host: int = 256, keepalive_seconds: float = 30.0):
        self._limit = max_connections_per_host
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=self._limit, keepalive_timeout=self._keepalive, ttl_dns_cache=10
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            timeout=aiohttp.ClientTimeout(total=None),
            requote_redirect_url=False,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None:
            session = self._session = self._new_session()
        timeout = request.extensions.get("timeout", {})
        headers = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() != b"transfer-encoding"
        )
        stream = request.stream
        # A known body goes as bytes (one write, Content-Length); anything else streams.
        data = (request.content or None) if isinstance(stream, httpx.ByteStream) else stream
        with _map_aiohttp_errors():
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=timeout.get("connect"), sock_read=timeout.get("read")
                ),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def build_transport(kind: str, *, max_connections: int = 256) -> httpx.AsyncBaseTransport:
    """The transport named in ``gateway.transport``: ``http1`` (default), aiohttp or httpcore."""
    if kind == "http1":
        from gateway.http1_transport import Http1Transport

        return Http1Transport(max_idle_per_host=max_connections)
    if kind == "httpcore":
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max_connections)
        return httpx.AsyncHTTPTransport(limits=limits, retries=0)
    return AiohttpTransport(max_connections_per_host=max_connections)
