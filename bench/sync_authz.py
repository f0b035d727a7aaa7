"""A lever under measurement, not the product: ext_authz on grpc's synchronous server.

``--core noop`` answers every check with OK, like ``bench/noop_authz.py`` but on
``grpc.server`` with a thread pool instead of ``grpc.aio``. ``--core doma`` serves
doma-gateway's own servicer and decision core: a check runs the servicer's coroutine to the end
on the calling thread when it never has to wait (a cached or locally verified token, keys loaded,
the revocation cache warm), and runs it again on an event-loop thread when it would wait (a key
fetch, the revocation store). A lock keeps the core's caches single-threaded. Key refresh and the
revocation bus run on that event-loop thread.

    python -m bench.sync_authz --core doma --routes routes.yaml --listen 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import uvloop
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from authz.grpc_check import AuthorizationServicer
from authz.loader import load_auth_settings
from doma_gateway.authz_process import build_authz

_OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def Check(self, request, context):  # type: ignore[no-untyped-def]
        return _OK


class SyncAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, servicer: AuthorizationServicer, loop: asyncio.AbstractEventLoop):
        self._servicer = servicer
        self._loop = loop
        self._lock = threading.Lock()
        self.on_loop = 0

    def Check(self, request, context):  # type: ignore[no-untyped-def]
        with self._lock:
            coroutine = self._servicer.Check(request, context)
            try:
                coroutine.send(None)
            except StopIteration as done:
                return done.value
            coroutine.close()
            self.on_loop += 1
        # It had to wait for I/O: decide again where awaiting works.
        check = self._servicer.Check(request, context)
        return asyncio.run_coroutine_threadsafe(check, self._loop).result(timeout=5)


def _doma(routes: Path) -> SyncAuthorization:
    loop = uvloop.new_event_loop()
    threading.Thread(target=loop.run_forever, name="doma-loop", daemon=True).start()

    async def build() -> Any:
        stack = build_authz(load_auth_settings(routes))
        background = getattr(stack, "run_background", None) or stack.keep_keys_fresh
        loop.create_task(background())
        await stack.keys_ready.wait()
        return stack

    stack = asyncio.run_coroutine_threadsafe(build(), loop).result(timeout=30)
    return SyncAuthorization(AuthorizationServicer(stack.authorizer, stack.metrics), loop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", choices=("noop", "doma"), default="noop")
    parser.add_argument("--routes", type=Path)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    servicer = NoopAuthorization() if args.core == "noop" else _doma(args.routes)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    port = server.add_insecure_port(args.listen)
    server.start()
    host = args.listen.rpartition(":")[0]
    print(json.dumps({"event": "listening", "grpc": f"{host}:{port}"}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1.0).wait()


if __name__ == "__main__":
    main()
