"""The parent of ``doma-gateway serve --workers N``.

It binds the listening socket once and starts N workers on it (each a ``serve`` process
handed the socket's descriptor), serves the admin listener with metrics summed over every
worker (Prometheus multiprocess mode), validates a reload before passing SIGHUP on (a worker
never sees a configuration the parent rejected), and stops the workers on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, generate_latest

from authz.check import CheckInput, Decision
from authz.errors import ConfigError
from authz.tokens import CredentialMemo
from doma_gateway.addresses import host_port
from doma_gateway.gateway_process import (
    ServeOptions,
    address_of,
    announce,
    announce_auth_needs_restart,
    announce_gateway_keys_need_restart,
    auth_section,
    bind_listener,
    load_config,
    served_extensions,
    uvicorn_server,
    wait_started,
)
from doma_gateway.inter_domain_wiring import InterDomainMetrics, inter_domain_rule
from gateway.admin import build_admin
from gateway.extensions.metrics import ExtensionMetrics
from gateway.metrics import GatewayMetrics
from gateway.policies import PolicyResources
from gateway.reload import Reloader
from gateway.routes_model import RoutesConfig
from gateway.runtime import Runtime, RuntimeHolder, build_runtime
from gateway.transport import build_transport

__all__ = ["run_supervisor"]

log = logging.getLogger("doma.gateway")


async def run_supervisor(options: ServeOptions, config: RoutesConfig) -> int:
    """The parent of ``--workers N``: shared socket, aggregated admin, reload and stop fan-out."""
    from prometheus_client import multiprocess

    metrics_dir = tempfile.TemporaryDirectory(prefix="doma-gateway-metrics-")
    sock = bind_listener(options.listen or host_port(config.gateway.listen))
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir.name}
    argv = [
        sys.executable,
        "-m",
        "doma_gateway.cli",
        "serve",
        "--routes",
        str(options.routes),
        "--workers",
        "1",
        "--worker-fd",
        str(sock.fileno()),
        "--no-watch",
    ]
    if options.domain:
        argv += ["--domain", options.domain]

    async def start_worker() -> subprocess.Popen[str]:
        """A worker on the shared socket, once it says it listens; ConfigError if it does not."""
        worker = await asyncio.to_thread(
            subprocess.Popen,
            argv,
            pass_fds=(sock.fileno(),),
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        line = await asyncio.to_thread(worker.stdout.readline)
        if '"listening"' not in line:
            worker.kill()
            await asyncio.to_thread(worker.wait)
            raise ConfigError("a worker failed to start", file=str(options.routes))
        threading.Thread(target=_drain, args=(worker.stdout,), daemon=True).start()
        return worker

    workers: list[subprocess.Popen[str]] = []
    try:
        for _ in range(options.workers):
            workers.append(await start_worker())
    except ConfigError:
        for other in workers:
            other.terminate()
        raise

    # The parent keeps its own copy of the config for /admin/routes and for validating reloads.
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir.name)  # type: ignore[no-untyped-call]
    local = GatewayMetrics(CollectorRegistry())
    transport = build_transport(config.gateway.transport)
    auth = auth_section(options.routes)
    validator = _NoAuthorizer() if auth is not None else None
    # The layer rule too, so a route that lists inter_domain validates here as in the workers.
    inter_domain = InterDomainMetrics(local.registry, "doma_gateway")
    policies = PolicyResources(
        authorizer=validator, inter_domain=inter_domain_rule(options.routes, inter_domain)
    )
    extension_metrics = ExtensionMetrics(local.registry)

    def runtime_for(served: RoutesConfig) -> Runtime:
        # Everything a worker checks, extensions included: a file the workers would reject is
        # rejected here, not announced as applied.
        return build_runtime(
            served,
            transport=transport,
            metrics=local,
            authorizer=validator,
            policies=policies,
            extensions=served_extensions(options, served, extension_metrics),
        )

    holder = RuntimeHolder(runtime_for(config))

    def apply() -> int:
        new = load_config(options)
        auth_changed = auth_section(options.routes) != auth
        policies.inter_domain = inter_domain_rule(options.routes, inter_domain)
        holder.swap(runtime_for(new))
        for worker in workers:
            worker.send_signal(signal.SIGHUP)
        if auth_changed:
            announce_auth_needs_restart()
        announce_gateway_keys_need_restart(options, config, new)
        return holder.generation

    reloader = Reloader(
        options.routes,
        apply,
        on_result=lambda e, f: announce(e, **f),
        interval=options.watch_interval,
    )
    alive = lambda: all(w.poll() is None for w in workers)  # noqa: E731
    admin_sock = bind_listener(
        options.admin or host_port(config.gateway.admin), "the admin listener"
    )
    admin = uvicorn_server(
        build_admin(holder, registry, alive, lambda: generate_latest(registry)), 1.0
    )
    admin_task = asyncio.create_task(admin.serve(sockets=[admin_sock]))
    await wait_started(admin)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload, "sighup")
    watcher = asyncio.create_task(reloader.watch()) if options.watch else None
    keeper = asyncio.create_task(_keep_workers(workers, start_worker, metrics_dir.name))
    announce(
        "listening",
        http=address_of(sock),
        admin=address_of(admin_sock),
        pid=os.getpid(),
        workers=[w.pid for w in workers],
        domains=[d.name for d in config.domains],
    )
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    keeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await keeper
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        await asyncio.to_thread(worker.wait)
    sock.close()
    admin.should_exit = True
    await admin_task
    await transport.aclose()
    metrics_dir.cleanup()
    announce("stopped")
    return 0


# How often the supervisor looks for a dead worker, and how long it waits before starting a
# replacement that failed to start last time (doubling up to the last value).
_WORKER_CHECK_SECONDS = 0.5
_RESTART_BACKOFF_SECONDS = (1.0, 30.0)


async def _keep_workers(
    workers: list[subprocess.Popen[str]],
    start_worker: Callable[[], Awaitable[subprocess.Popen[str]]],
    metrics_dir: str,
) -> None:
    """Replace any worker that exits while the supervisor serves (until it is cancelled)."""
    from prometheus_client import multiprocess

    backoff = [0.0] * len(workers)
    while True:
        await asyncio.sleep(_WORKER_CHECK_SECONDS)
        for index, worker in enumerate(workers):
            code = worker.poll()
            if code is None:
                continue
            if backoff[index]:
                await asyncio.sleep(backoff[index])
            else:
                log.error(
                    "a worker exited; starting another",
                    extra={"event": "worker_exited", "pid": worker.pid, "exit_code": code},
                )
                # Its live gauges (in-flight requests) must not stay in the summed metrics.
                multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]
            try:
                workers[index] = await start_worker()
            except ConfigError:
                first, most = _RESTART_BACKOFF_SECONDS
                backoff[index] = min(most, backoff[index] * 2 or first)
                log.error(
                    "a replacement worker failed to start; trying again",
                    extra={"event": "worker_start_failed", "retry_seconds": backoff[index]},
                )
                continue
            backoff[index] = 0.0
            announce("worker_restarted", old_pid=worker.pid, pid=workers[index].pid, exit_code=code)


class _NoAuthorizer:
    """The supervisor only validates routes; its runtime never serves a request."""

    def decide_now(self, request: CheckInput) -> Decision | None:
        raise RuntimeError("the supervisor does not serve requests")

    async def decide(self, request: CheckInput) -> Decision:
        raise RuntimeError("the supervisor does not serve requests")

    def decide_repeat(self, memo: CredentialMemo, header: str, path: str) -> Decision | None:
        raise RuntimeError("the supervisor does not serve requests")


def _drain(stream: object) -> None:
    for line in stream:  # type: ignore[attr-defined]
        with contextlib.suppress(ValueError):
            event = json.loads(line).get("event")
            if event in ("reload_rejected",):
                log.error("a worker rejected a configuration the supervisor accepted")
