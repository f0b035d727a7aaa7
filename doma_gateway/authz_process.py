"""Wires and runs ``doma-gateway authz``: the only place that knows every concrete authz class."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, start_http_server

from authz.core import Authorizer
from authz.grpc_check import AuthorizationServicer
from authz.http_server import HttpCheckServer
from authz.key_sources import build_key_cache, keep_keys_fresh
from authz.keys import KeyCache
from authz.loader import load_auth_settings
from authz.metrics import AuthzMetrics
from authz.revocation_api import AdminCredentials, AdminServer, RevocationServicer
from authz.server import AuthzServer
from authz.settings import AuthSettings
from authz.tokens import TokenVerifier
from doma_gateway.addresses import HostPort, listening_on
from doma_gateway.inter_domain_wiring import with_inter_domain
from doma_gateway.revocation import RevocationStack, build_revocation

__all__ = ["AuthzOptions", "AuthzStack", "build_authz", "run_authz"]

log = logging.getLogger("doma.authz")


@dataclass(frozen=True, slots=True)
class AuthzOptions:
    routes: Path
    listen: HostPort
    metrics: HostPort | None
    grace: float = 10.0
    # The revocation API listener (only when auth.revocation is configured); None: not served.
    admin: HostPort | None = None
    # False when ``admin`` is only the default: a taken default port then costs the API, not
    # the whole server (checks matter more than the admin listener).
    admin_explicit: bool = True
    # Envoy's HTTP ext_authz protocol (http_service), beside gRPC; None: not served.
    http_listen: HostPort | None = None
    http_path_prefix: str = ""


@dataclass(slots=True)
class AuthzStack:
    """The wired core, shared by every adapter in one process."""

    settings: AuthSettings
    key_caches: dict[str, KeyCache]
    authorizer: Authorizer
    verifier: TokenVerifier
    registry: CollectorRegistry
    metrics: AuthzMetrics
    http: httpx.AsyncClient
    keys_ready: asyncio.Event
    revocation: RevocationStack | None = None

    async def keep_keys_fresh(self) -> None:
        await keep_keys_fresh(self.key_caches.values(), self.keys_ready)

    async def run_background(self) -> None:
        """Key refresh and, when configured, the revocation bus and epoch loops."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.keep_keys_fresh())
            if self.revocation is not None:
                group.create_task(self.revocation.run())

    def ready(self) -> bool:
        return self.revocation is None or self.revocation.ready()

    def admin_servicer(self) -> RevocationServicer:
        assert self.revocation is not None
        credentials = AdminCredentials(
            self.verifier,
            self.revocation.settings.admin_scope,
            revocation=self.revocation.cache,
            max_token_bytes=self.settings.max_token_bytes,
        )
        return RevocationServicer(self.revocation.revoker, credentials)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.http.aclose()
        if self.revocation is not None:
            with contextlib.suppress(Exception):
                await self.revocation.close()


def build_authz(settings: AuthSettings) -> AuthzStack:
    # Redirects are not followed: a JWKS endpoint that moves is a configuration change.
    http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
    key_caches = {issuer.issuer: build_key_cache(issuer, http) for issuer in settings.issuers}
    verifier = TokenVerifier(settings.issuers, key_caches, cache_size=settings.token_cache_size)
    registry = CollectorRegistry()
    revocation = None
    if settings.revocation is not None:
        # Keep a revoked jti as long as any issuer would still accept the token.
        margin = max(issuer.leeway for issuer in settings.issuers)
        revocation = build_revocation(
            settings.revocation, retention_margin=margin, registry=registry
        )
    return AuthzStack(
        settings=settings,
        key_caches=key_caches,
        authorizer=Authorizer(settings, verifier, revocation.cache if revocation else None),
        verifier=verifier,
        registry=registry,
        metrics=AuthzMetrics(registry, verifier, key_caches),
        http=http,
        keys_ready=asyncio.Event(),
        revocation=revocation,
    )


async def run_authz(options: AuthzOptions) -> int:
    stack = build_authz(load_auth_settings(options.routes))
    # The token decision, then (with inter_domain:) the layer rule for the mesh caller.
    decider = with_inter_domain(options.routes, stack.authorizer, stack.registry)
    # The admin listener first: an unusable explicit --admin fails before anything listens.
    admin: AdminServer | None = None
    if stack.revocation is not None and options.admin is not None:
        admin = AdminServer(stack.admin_servicer(), listen=str(options.admin))
        try:
            await admin.start()
        except OSError as exc:
            if options.admin_explicit:
                await stack.aclose()
                raise
            log.warning(
                "revocation API not served: its default listener is unavailable; "
                "pass --admin HOST:PORT (or --no-admin)",
                extra={
                    "event": "admin_unavailable",
                    "admin": str(options.admin),
                    "error": str(exc),
                },
            )
            admin = None
    server = AuthzServer(
        AuthorizationServicer(decider, stack.metrics, loop=asyncio.get_running_loop()),
        listen=str(options.listen),
        ready=stack.keys_ready,
        grace=options.grace,
        background=stack.run_background,
        readiness=stack.ready,
    )
    await server.start()
    http_check: HttpCheckServer | None = None
    if options.http_listen is not None:
        http_check = HttpCheckServer(decider, stack.metrics, path_prefix=options.http_path_prefix)
        with listening_on("the HTTP check listener", options.http_listen):
            await http_check.start(options.http_listen.host, options.http_listen.port)
    metrics_address = None
    if options.metrics is not None:
        with listening_on("the metrics listener", options.metrics):
            http_server, _ = start_http_server(
                options.metrics.port, addr=options.metrics.host, registry=stack.registry
            )
        metrics_address = str(HostPort(options.metrics.host, http_server.server_port))
    announce(
        "listening",
        grpc=str(HostPort(options.listen.host, server.port or 0)),
        http=str(HostPort(options.http_listen.host, http_check.port or 0))
        if http_check and options.http_listen
        else None,
        metrics=metrics_address,
        admin=str(HostPort(options.admin.host, admin.port or 0))
        if admin and options.admin
        else None,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"event": "shutdown", "grace_seconds": options.grace})
    if admin is not None:
        await admin.shutdown()
    if http_check is not None:
        await http_check.shutdown(options.grace)
    await server.shutdown()
    await stack.aclose()
    await _finish_leftover_tasks()
    announce("stopped")
    return 0


async def _finish_leftover_tasks(seconds: float = 2.0) -> None:
    """Cancel and collect what client libraries left running (aiormq closes channels in tasks
    of its own after a flapping broker), so their errors end here instead of being reported as
    unhandled, with a traceback, when the event loop closes."""
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current]
    for task in leftovers:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await asyncio.gather(*leftovers, return_exceptions=True)


def announce(event: str, **fields: object) -> None:
    """A machine-readable line on stdout (tests and the demo wait for these)."""
    print(json.dumps({"event": event, **fields}), file=sys.stdout, flush=True)
