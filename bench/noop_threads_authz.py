"""A no-op ext_authz on grpc's thread-pool server: the floor of doma-gateway's own server model.

``doma-gateway authz`` serves Check from ``grpc.server`` with a thread pool (see
``authz/grpc_check.py``); this answers every check with OK on the same server, thread count and
options, so the gap between the two is the decision itself. ``bench/noop_authz.py`` is the
grpc.aio floor the targets are measured against.

    python -m bench.noop_threads_authz --listen 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from concurrent import futures

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from authz.server import CHECK_THREADS, SERVER_OPTIONS

_OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def Check(self, request, context):  # type: ignore[no-untyped-def]
        return _OK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(CHECK_THREADS), options=SERVER_OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(), server)
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
