"""``python -m bench.naive_proxy``: the reverse proxy most Starlette tutorials arrive at.

One catch-all route, an ``httpx.AsyncClient`` per process, ``build_request`` + ``send(stream=True)``
and a ``StreamingResponse`` with a background task closing the upstream response. It is the
baseline doma-gateway's proxy is measured against, with httpx's default transport (httpcore) or
with the ``httpx-aiohttp`` transport (``--transport httpx-aiohttp``). Served by uvicorn with
uvloop and httptools, like the gateway.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route


def build_app(upstream: str, transport: str) -> Starlette:
    if transport == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        client = httpx.AsyncClient(base_url=upstream, transport=AiohttpTransport())
    else:
        client = httpx.AsyncClient(base_url=upstream)

    async def proxy(request: Request) -> StreamingResponse:
        url = httpx.URL(path=request.url.path, query=request.url.query.encode())
        upstream_request = client.build_request(
            request.method, url, headers=request.headers.raw, content=request.stream()
        )
        response = await client.send(upstream_request, stream=True)
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            headers=response.headers,
            background=BackgroundTask(response.aclose),
        )

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", proxy, methods=methods)])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_proxy")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--transport", choices=("httpcore", "httpx-aiohttp"), default="httpcore")
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(
        json.dumps({"event": "listening", "http": f"127.0.0.1:{sock.getsockname()[1]}"}), flush=True
    )
    config = uvicorn.Config(
        build_app(args.upstream, args.transport), loop="uvloop", http="httptools",
        lifespan="off", access_log=False, log_level="warning",
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
