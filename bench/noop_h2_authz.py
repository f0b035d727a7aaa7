"""A no-op Envoy HTTP ext_authz server over HTTP/2 (prior knowledge): every check gets a 200.

The floor for any Python check over HTTP/2: an asyncio protocol on uvloop that splits frames,
acknowledges SETTINGS and PING, and answers each request's last frame with a pre-encoded
``:status: 200``, every answer to one read in one write. It decodes no HPACK at all (a real
check must, to read the token), so it is a floor no real check server can reach.

    python -m bench.noop_h2_authz --listen 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvloop

from bench.noop_http_authz import serve

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
_END_STREAM, _END_HEADERS = 0x1, 0x4
# HPACK: indexed field 8 of the static table, ":status: 200".
_OK_BLOCK = b"\x88"


class NoopCheck(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = b""
        self._preface = False
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        transport.write(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # our (empty) SETTINGS

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        position = 0
        if not self._preface:
            if len(buffer) < len(_PREFACE):
                self._buffer = buffer
                return
            self._preface, position = True, len(_PREFACE)
        out = []
        while len(buffer) - position >= 9:
            length = int.from_bytes(buffer[position : position + 3], "big")
            end = position + 9 + length
            if end > len(buffer):
                break
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream = buffer[position + 5 : position + 9]
            if kind in (0, 1) and flags & _END_STREAM:  # DATA or HEADERS ending a request
                out.append(b"\x00\x00\x01\x01\x05" + stream + _OK_BLOCK)
            elif kind == 4 and not flags & 0x1:
                out.append(_SETTINGS_ACK)
            elif kind == 6 and not flags & 0x1:
                out.append(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + buffer[position + 9 : end])
            position = end
        self._buffer = buffer[position:]
        if out:
            self._transport.write(b"".join(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    uvloop.run(serve(parser.parse_args().listen, NoopCheck))


if __name__ == "__main__":
    main()
