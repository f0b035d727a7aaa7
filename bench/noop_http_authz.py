"""A no-op Envoy HTTP ext_authz server (``http_service``): every check gets an empty 200.

The floor for any Python check over Envoy's HTTP protocol: an asyncio protocol on uvloop that
finds the end of each request's head and answers it, keeping the connection open. Envoy's check
requests carry no body unless ``with_request_body`` is set, which the benchmark never sets.

    python -m bench.noop_http_authz --listen 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

import uvloop

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class NoopCheck(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = b""
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        heads = self._buffer.count(b"\r\n\r\n")
        if heads:
            self._buffer = self._buffer.rpartition(b"\r\n\r\n")[2]
            self._transport.write(_OK * heads)


async def serve(listen: str, protocol: Callable[[], asyncio.Protocol] = NoopCheck) -> None:
    """Serve ``protocol`` at ``listen`` until SIGTERM or SIGINT; announce the port first."""
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, host, int(port))
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "listening", "http": f"{host}:{bound}"}), flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    uvloop.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
