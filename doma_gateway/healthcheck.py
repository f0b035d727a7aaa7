"""``python -m doma_gateway.healthcheck``: the container image's health check.

One image runs either ``doma-gateway serve`` or ``doma-gateway authz`` and a Dockerfile has one
``HEALTHCHECK``, so the check asks both: the gateway admin listener's ``/readyz`` and the authz
server's gRPC health (service ``""``). Healthy (exit 0) as soon as one of them answers ready;
unhealthy (exit 1) when none does. It runs inside the container, where the loopback defaults of
both listeners are reachable; pass ``--http``/``--grpc`` when the listeners were moved.
"""

from __future__ import annotations

import argparse
import http.client
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from doma_gateway.arguments import positive_seconds

__all__ = ["check_grpc", "check_http", "main"]

DEFAULT_HTTP = "http://127.0.0.1:9901/readyz"
DEFAULT_GRPC = "127.0.0.1:9000"


def check_http(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 200, else why not."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return f"{url}: expected an http:// URL"
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/")
        status = connection.getresponse().status
    except OSError as exc:
        return f"{url}: {exc.strerror or exc}"
    finally:
        connection.close()
    return None if status == 200 else f"{url}: HTTP {status}"


def check_grpc(address: str, timeout: float) -> str | None:
    """None when the gRPC health service at ``address`` answers SERVING, else why not."""
    # Imported here: the gateway's check above needs no gRPC.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"grpc {address}: {exc.code().name}"
    status = health_pb2.HealthCheckResponse
    if response.status != status.SERVING:
        return f"grpc {address}: {status.ServingStatus.Name(response.status)}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m doma_gateway.healthcheck", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--http", default=DEFAULT_HTTP, metavar="URL", help="gateway /readyz")
    parser.add_argument("--grpc", default=DEFAULT_GRPC, metavar="HOST:PORT", help="authz health")
    parser.add_argument("--timeout", type=positive_seconds, default=2.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    problems = []
    for check, target in ((check_http, args.http), (check_grpc, args.grpc)):
        problem = check(target, args.timeout)
        if problem is None:
            print(f"healthy: {target}")
            return 0
        problems.append(problem)
    print("unhealthy: " + "; ".join(problems))
    return 1


if __name__ == "__main__":
    sys.exit(main())
