"""A JWKS endpoint whose keys a test can rotate, counting the fetches it serves."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JwksServer:
    def __init__(self, document: bytes, *, cache_control: str = "max-age=300"):
        self.document = document
        self.cache_control = cache_control
        self.status = 200
        self.fetches = 0
        self.delay = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            # Head and body go out in two writes: without this the body waits for a delayed ACK.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                outer.fetches += 1
                time.sleep(outer.delay)
                body = outer.document if outer.status == 200 else b"{}"
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", outer.cache_control)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
