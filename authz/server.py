"""The ext-authz gRPC server process: startup, serving and a bounded graceful shutdown.

Health (``grpc.health.v1``) is NOT_SERVING until every issuer's keys are loaded, and again as soon
as shutdown begins, so a load balancer stops sending before the listener closes. In between it
follows ``readiness`` (e.g. the revocation store and bus), polled a few times a second.

The gRPC server is grpc's thread-pool server (see :mod:`authz.grpc_check` for why); start-up,
readiness and shutdown are driven from the event loop that also runs key refresh, the revocation
bus and the checks that must wait for I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz.grpc_check import CHECK_THREADS, AuthorizationServicer

__all__ = ["CHECK_THREADS", "SERVER_OPTIONS", "AuthzServer"]

log = logging.getLogger("doma.authz.server")
_SERVICES = ("", "envoy.service.auth.v3.Authorization")
_READINESS_POLL_SECONDS = 0.25
SERVER_OPTIONS = (
    ("grpc.so_reuseport", 0),
    ("grpc.max_concurrent_streams", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
)


class AuthzServer:
    def __init__(
        self,
        servicer: AuthorizationServicer,
        *,
        listen: str,
        ready: asyncio.Event,
        grace: float = 10.0,
        background: Callable[[], Coroutine[Any, Any, None]] | None = None,
        readiness: Callable[[], bool] | None = None,
    ):
        self._servicer = servicer
        self._listen = listen
        self._ready = ready
        self._grace = grace
        self._background = background
        self._readiness = readiness
        self._health = health.HealthServicer()
        self._server: grpc.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None

    async def start(self) -> None:
        server = grpc.server(
            futures.ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="check"),
            options=SERVER_OPTIONS,
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for service in _SERVICES:
            self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            self.port = server.add_insecure_port(self._listen)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self._listen}") from exc
        if not self.port:
            raise OSError(f"cannot listen on {self._listen}")
        server.start()
        self._server = server
        if self._background is not None:
            self._tasks.append(asyncio.create_task(self._background()))
        self._tasks.append(asyncio.create_task(self._serve_when_ready()))

    async def _serve_when_ready(self) -> None:
        await self._ready.wait()
        serving: bool | None = None
        while True:
            now_serving = self._readiness is None or self._readiness()
            if now_serving != serving:
                serving = now_serving
                status = health_pb2.HealthCheckResponse.SERVING
                if not serving:
                    status = health_pb2.HealthCheckResponse.NOT_SERVING
                for service in _SERVICES:
                    self._health.set(service, status)
                log.info(
                    "serving" if serving else "not ready",
                    extra={"event": "serving" if serving else "not_ready"},
                )
            if self._readiness is None:
                return
            await asyncio.sleep(_READINESS_POLL_SECONDS)

    async def shutdown(self) -> None:
        """Health NOT_SERVING first, then stop accepting and drain in-flight checks."""
        self._health.enter_graceful_shutdown()
        if self._server is not None:
            # Checks in flight may be waiting on this loop: wait for the drain off the loop.
            stopped = self._server.stop(self._grace)
            await asyncio.to_thread(stopped.wait)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
