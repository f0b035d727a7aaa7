"""Wires and runs ``doma-gateway serve``: the edge gateway, its admin listener and its workers.

One process (``--workers 1``) serves the gateway and the admin listener. With more workers the
parent binds the sockets, starts the workers on the shared listening socket, serves the admin
listener itself with metrics aggregated from every worker, and forwards reloads (only after it
has validated the new configuration) and shutdown to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import CollectorRegistry

from authz.errors import ConfigError
from authz.loader import load_auth_settings
from authz.settings import AuthSettings
from doma_gateway.addresses import HostPort, host_port, listening_on
from doma_gateway.inter_domain_wiring import InterDomainMetrics, inter_domain_rule
from doma_gateway.serve_command import has_section
from gateway.admin import build_admin
from gateway.app import GatewayApp
from gateway.extensions.host import ExtensionHost
from gateway.extensions.loader import load_extensions
from gateway.extensions.metrics import ExtensionMetrics
from gateway.http_protocol import GatewayHttpProtocol
from gateway.metrics import GatewayMetrics
from gateway.policies import PolicyResources
from gateway.policies.metrics import PolicyMetrics
from gateway.reload import Reloader
from gateway.routes_lint import lint_routes
from gateway.routes_loader import load_routes
from gateway.routes_model import RoutesConfig
from gateway.runtime import RuntimeHolder, build_runtime
from gateway.transport import build_transport

if TYPE_CHECKING:
    from doma_gateway.authz_process import AuthzStack

__all__ = [
    "ServeOptions",
    "address_of",
    "announce",
    "bind_listener",
    "load_config",
    "run_serve",
    "uvicorn_server",
    "wait_started",
]

log = logging.getLogger("doma.gateway")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    routes: Path
    listen: HostPort | None = None
    admin: HostPort | None = None
    domain: str | None = None
    workers: int = 1
    watch: bool = True
    watch_interval: float = 1.0
    # Set in a worker started by the parent: the inherited listening socket's descriptor.
    worker_fd: int | None = None


def load_config(options: ServeOptions) -> RoutesConfig:
    config = load_routes(options.routes)
    if options.domain is not None:
        try:
            config = config.only(options.domain)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), file=str(options.routes)) from exc
    return config


def bind_listener(address: HostPort, what: str = "the gateway") -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        with listening_on(what, address):
            sock.bind((address.host, address.port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return str(HostPort(host, port))


def uvicorn_server(
    app: object, grace: float, protocol: type[GatewayHttpProtocol] = GatewayHttpProtocol
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        loop="none",
        # uvicorn's httptools protocol with the edge's limits on request heads and bodies.
        http=protocol,
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        # The upstream's Date passes through; a second one from us would duplicate it.
        date_header=False,
        # X-Forwarded-* are ours to judge (gateway.trusted_proxies), not uvicorn's.
        proxy_headers=False,
        timeout_graceful_shutdown=max(int(grace), 1),
        timeout_keep_alive=30,
        backlog=2048,
    )
    return uvicorn.Server(config)


async def wait_started(*servers: uvicorn.Server) -> None:
    # uvicorn exposes startup only as a flag; polling it briefly is the documented way.
    while not all(server.started for server in servers):  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def run_serve(options: ServeOptions) -> int:
    config = load_config(options)
    if options.worker_fd is None:
        # First match wins either way; check refuses these, serve only says so.
        for finding in lint_routes(config):
            log.warning("%s", finding, extra={"event": "routes_lint"})
    if options.workers > 1 and options.worker_fd is None:
        from doma_gateway.gateway_workers import run_supervisor

        return await run_supervisor(options, config)

    auth = auth_section(options.routes)
    # With PROMETHEUS_MULTIPROC_DIR set (a worker), values go to files the supervisor aggregates.
    metrics = GatewayMetrics(CollectorRegistry())
    transport = build_transport(config.gateway.transport)
    wiring = wire_policies(options.routes, auth, metrics)
    stack, policies, inter_domain = wiring.stack, wiring.policies, wiring.inter_domain

    extension_metrics = ExtensionMetrics(metrics.registry)

    holder = RuntimeHolder(
        build_runtime(
            config,
            transport=transport,
            metrics=metrics,
            policies=policies,
            extensions=served_extensions(options, config, extension_metrics),
        )
    )

    def apply() -> int:
        policies.inter_domain = inter_domain_rule(options.routes, inter_domain)
        served = load_config(options)
        # A worker's parent has checked the auth: section already, and says what changed.
        auth_changed = options.worker_fd is None and auth_section(options.routes) != auth
        runtime = build_runtime(
            served,
            transport=transport,
            metrics=metrics,
            policies=policies,
            previous=holder.current,
            extensions=served_extensions(options, served, extension_metrics),
        )
        holder.swap(runtime)
        metrics.reload("ok")
        if auth_changed:
            announce_auth_needs_restart()
        if options.worker_fd is None:
            announce_gateway_keys_need_restart(options, config, served)
        return holder.generation

    def report(event: str, fields: dict[str, object]) -> None:
        if event != "reloaded":
            metrics.reload("rejected")
        announce(event, **fields)

    reloader = Reloader(options.routes, apply, on_result=report, interval=options.watch_interval)
    grace = config.gateway.drain_seconds
    stopping = False

    def ready() -> bool:
        # Ready once the token keys are loaded (when auth is configured), until shutdown.
        return not stopping and (stack is None or (stack.keys_ready.is_set() and stack.ready()))

    if options.worker_fd is not None:
        sock = socket.socket(fileno=options.worker_fd)
    else:
        sock = bind_listener(options.listen or host_port(config.gateway.listen))
    gateway_app = GatewayApp(holder, metrics)
    limits = config.gateway
    protocol = GatewayHttpProtocol.limited(
        max_head_bytes=limits.max_request_head_bytes,
        head_seconds=limits.client_head_seconds,
        body_idle_seconds=limits.client_body_idle_seconds,
    )
    gateway_server = uvicorn_server(gateway_app, grace, protocol)
    servers = [gateway_server]
    admin_sock: socket.socket | None = None
    if options.worker_fd is None:
        admin_sock = bind_listener(
            options.admin or host_port(config.gateway.admin), "the admin listener"
        )
        admin_app = build_admin(holder, metrics.registry, ready)
        servers.append(uvicorn_server(admin_app, 1.0))

    tasks = [asyncio.create_task(gateway_server.serve(sockets=[sock]))]
    if admin_sock is not None:
        tasks.append(asyncio.create_task(servers[1].serve(sockets=[admin_sock])))
    background: list[asyncio.Task[None]] = []
    if stack is not None:
        # Key refresh and, with auth.revocation, the invalidation bus and epoch loops: the
        # gateway's in-process auth sees revocations as soon as doma-gateway authz does.
        background.append(asyncio.create_task(stack.run_background()))
    await wait_started(*servers)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload, "sighup")
    if options.watch and options.worker_fd is None:
        background.append(asyncio.create_task(reloader.watch()))
    announce(
        "listening",
        http=address_of(sock),
        admin=address_of(admin_sock) if admin_sock is not None else None,
        pid=os.getpid(),
        domains=[d.name for d in config.domains],
    )

    await stop.wait()
    stopping = True
    log.info("shutting down", extra={"event": "shutdown", "grace_seconds": grace})
    gateway_server.should_exit = True
    await tasks[0]
    gateway_app.access.flush()
    for server in servers[1:]:
        server.should_exit = True
    await asyncio.gather(*tasks[1:])
    for task in background:
        task.cancel()
    with contextlib.suppress(Exception):
        await transport.aclose()
    await policies.aclose()
    if stack is not None:
        await stack.aclose()
    announce("stopped")
    return 0


@dataclass
class PolicyWiring:
    """What every chain of ``serve`` shares, kept across reloads: the authz stack of the
    ``auth:`` section (None without one), the policies' resources (buckets, Redis clients,
    ext-authz channels, the layer rule) and the layer rule's metrics."""

    stack: AuthzStack | None
    policies: PolicyResources
    inter_domain: InterDomainMetrics


def wire_policies(routes: Path, auth: AuthSettings | None, metrics: GatewayMetrics) -> PolicyWiring:
    """``serve``'s wiring of the policies; ``check`` builds the chains with the same one."""
    stack: AuthzStack | None = None
    identity: tuple[str, ...] = ()
    if auth is not None:
        # Imported here: the authz stack (gRPC, Redis clients) is only needed with an auth section.
        from doma_gateway.authz_process import build_authz

        stack = build_authz(auth)
        identity = tuple(m.header for m in auth.claims_to_headers)
    inter_domain = InterDomainMetrics(metrics.registry, "doma_gateway")
    policies = PolicyResources(
        authorizer=stack.authorizer if stack is not None else None,
        identity_headers=identity,
        metrics=PolicyMetrics(metrics.registry),
        inter_domain=inter_domain_rule(routes, inter_domain),
    )
    return PolicyWiring(stack, policies, inter_domain)


def auth_section(routes: Path) -> AuthSettings | None:
    """The routes' ``auth:`` settings, validated; None without an ``auth:`` section."""
    return load_auth_settings(routes) if has_section(routes, "auth") else None


def served_extensions(
    options: ServeOptions, served: RoutesConfig, metrics: ExtensionMetrics
) -> ExtensionHost | None:
    """The extensions of ``served``, loaded and checked: domain points against the whole edge,
    ``route_to`` against the upstreams served."""
    whole = load_routes(options.routes) if options.domain is not None else served
    return load_extensions(options.routes, whole, metrics, upstreams=frozenset(served.upstreams))


# gateway: keys the server is built from at start-up: a reload validates them and keeps the old.
_STARTUP_KEYS = (
    "transport",
    "drain_seconds",
    "max_request_head_bytes",
    "client_head_seconds",
    "client_body_idle_seconds",
)


def announce_gateway_keys_need_restart(
    options: ServeOptions, started: RoutesConfig, served: RoutesConfig
) -> None:
    """Say which start-up keys of ``gateway:`` a reload changed (listen and admin unless the
    command line chose them): each keeps its start-up value until a restart."""
    keys = [*_STARTUP_KEYS]
    keys += [k for k, flag in (("listen", options.listen), ("admin", options.admin)) if not flag]
    changed = [k for k in keys if getattr(started.gateway, k) != getattr(served.gateway, k)]
    if changed:
        _restart_needed(
            f"gateway: {', '.join(changed)} changed; read at start-up, restart to apply "
            "(the start-up values stay until then)",
            section="gateway",
            keys=changed,
        )


def announce_auth_needs_restart() -> None:
    """A reload applied the routes but not a changed ``auth:`` section: its keys, caches and
    revocation bus were built at start-up, so the old section keeps deciding until a restart."""
    _restart_needed(
        "the auth: section changed; it is read at start-up, restart to apply it", section="auth"
    )


def _restart_needed(reason: str, **fields: object) -> None:
    log.warning(reason, extra={"event": "restart_needed"})
    announce("restart_needed", **fields, reason=reason)


def announce(event: str, **fields: object) -> None:
    """A machine-readable line on stdout (tests, the demo and the supervisor wait for these)."""
    print(json.dumps({"event": event, **fields}), file=sys.stdout, flush=True)
