"""Scripted upstream services for gateway tests: slow, failing, flaky, streaming, counting.

One threaded HTTP/1.1 server whose behaviour is chosen by the request path (after the
gateway's rewrite), so one process-wide server can play every kind of domain service:

- ``/slow/{seconds}``      waits, then answers 200
- ``/status/{code}``       answers with that status
- ``/flaky/{n}``           answers 503 to the first n requests for that path, then 200
- ``/download/{bytes}``    streams that many bytes (chunked unless ``?length=1``)
- ``/upload``              reads the body as it comes and answers with its size
- ``/sse/{n}``             sends n server-sent events, ``?gap=seconds`` apart
- ``/fail-on/{name}``      answers 500 on the upstream called ``name``, 200 elsewhere
- anything else            echoes method, path, headers and body size as JSON

Every request is counted in :attr:`ScriptedUpstream.hits` (path to count).
"""

from __future__ import annotations

import collections
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["ScriptedUpstream"]

_CHUNK = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out in two writes: without this the body waits for a delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-upstream", self.server.name)
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> int:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return total
                remaining = size
                while remaining:
                    remaining -= len(self.rfile.read(min(remaining, _CHUNK)))
                total += size
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        remaining = length
        while remaining:
            data = self.rfile.read(min(remaining, _CHUNK))
            if not data:
                break
            remaining -= len(data)
        return length - remaining

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        with self.server.lock:
            self.server.hits[url.path] += 1
            count = self.server.hits[url.path]
        size = self._read_body()
        kind = parts[0] if parts else ""
        if kind == "slow":
            time.sleep(float(parts[1]))
            self._reply(200, b'{"slept": true}')
        elif kind == "status":
            self._reply(int(parts[1]), json.dumps({"status": int(parts[1])}).encode())
        elif kind == "flaky":
            status = 503 if count <= int(parts[1]) else 200
            self._reply(status, json.dumps({"attempt": count}).encode())
        elif kind == "download":
            self._download(int(parts[1]), "length" in query)
        elif kind == "upload":
            self._reply(200, json.dumps({"received": size}).encode())
        elif kind == "fail-on":
            status = 500 if parts[1] == self.server.name else 200
            self._reply(status, json.dumps({"upstream": self.server.name}).encode())
        elif kind == "sse":
            self._sse(int(parts[1]), float(query.get("gap", ["0.2"])[0]))
        else:
            body = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_bytes": size,
                "upstream": self.server.name,
            }
            self._reply(200, json.dumps(body).encode())

    def _download(self, total: int, with_length: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        if with_length:
            self.send_header("content-length", str(total))
        else:
            self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        block = b"x" * _CHUNK
        sent = 0
        while sent < total:
            piece = block[: min(_CHUNK, total - sent)]
            if with_length:
                self.wfile.write(piece)
            else:
                self._chunk(piece)
            sent += len(piece)
        if not with_length:
            self.wfile.write(b"0\r\n\r\n")

    def _sse(self, events: int, gap: float) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for number in range(events):
            self._chunk(f"data: {number}\n\n".encode())
            time.sleep(gap)
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, address: tuple[str, int]):
        super().__init__(address, _Handler)
        self.name = name
        self.lock = threading.Lock()
        self.hits: collections.Counter[str] = collections.Counter()

    def handle_error(self, request: object, client_address: object) -> None:
        # A client (the gateway) that gave up on a slow answer is part of the test, not noise.
        return


class ScriptedUpstream:
    def __init__(
        self,
        name: str = "upstream",
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ):
        self._server = _Server(name, (host, port))
        self._scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    @property
    def hits(self) -> collections.Counter[str]:
        return self._server.hits

    def start(self) -> ScriptedUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
