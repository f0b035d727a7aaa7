"""The ``serve`` subcommand and the route table that ``check`` prints."""

from __future__ import annotations

import argparse
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import yaml

from authz.yamlnodes import load_documents
from doma_gateway.addresses import host_port
from doma_gateway.arguments import at_least_one, positive_seconds
from gateway.routes_loader import load_routes
from gateway.routes_model import RoutesConfig

__all__ = ["add_serve_parser", "has_section", "print_route_table", "run_serve_command"]


def add_serve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve", help="run the edge gateway (routes YAML -> domain services)"
    )
    serve.add_argument(
        "--routes", type=Path, default=Path("routes"), help="routes YAML file or directory"
    )
    serve.add_argument(
        "--listen",
        type=host_port,
        default=None,
        metavar="HOST:PORT",
        help="gateway listener (default: gateway.listen, else 0.0.0.0:8080)",
    )
    serve.add_argument(
        "--admin",
        type=host_port,
        default=None,
        metavar="HOST:PORT",
        help="admin listener: /healthz /readyz /metrics /admin/routes /admin/map "
        "(default: gateway.admin, else 127.0.0.1:9901)",
    )
    serve.add_argument(
        "--domain",
        default=None,
        metavar="NAME",
        help="serve this domain only (the domain's own gateway)",
    )
    serve.add_argument(
        "--workers", type=at_least_one, default=1, metavar="N", help="worker processes"
    )
    serve.add_argument(
        "--no-watch",
        action="store_true",
        help="reload on SIGHUP only, not when a routes file changes",
    )
    serve.add_argument(
        "--watch-interval",
        type=positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how often routes files are checked for changes",
    )
    serve.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)


def run_serve_command(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from doma_gateway.gateway_process import ServeOptions, run_serve

    if args.workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    return run_serve(
        ServeOptions(
            routes=args.routes,
            listen=args.listen,
            admin=args.admin,
            domain=args.domain,
            workers=args.workers,
            watch=not args.no_watch,
            watch_interval=args.watch_interval,
            worker_fd=args.worker_fd,
        )
    )


def has_section(path: Path, name: str) -> bool:
    """Whether any routes file under ``path`` has the top-level key ``name``."""
    for document in load_documents(path):
        if isinstance(document.raw, yaml.MappingNode) and any(
            key.value == name for key, _ in document.raw.value
        ):
            return True
    return False


def print_route_table(path: Path) -> RoutesConfig:
    config = load_routes(path)
    print(f"layers: {' < '.join(config.layers)}")
    for domain in sorted(config.domains, key=lambda d: (config.layers.index(d.layer), d.name)):
        depends = f"  depends_on={','.join(domain.depends_on)}" if domain.depends_on else ""
        print(
            f"domain {domain.name}  layer={domain.layer}  owner={domain.owner}  "
            f"default_version={domain.default_version}{depends}  ({domain.source})"
        )
        for version in domain.versions:
            notes = []
            if version.deprecated:
                notes.append(f"deprecated={version.deprecated.date().isoformat()}")
            if version.sunset:
                notes.append(f"sunset={version.sunset.date().isoformat()}")
            print(f"  {version.name}{'  ' + '  '.join(notes) if notes else ''}")
            for route in version.routes:
                methods = ",".join(sorted(route.methods)) if route.methods else "*"
                target = route.upstream
                if route.rewrite is not None:
                    target += f" {route.rewrite.path or (route.rewrite.prefix or '/') + '/...'}"
                shown = f"/api/{version.name}/{domain.name}{route.path}"
                print(f"    {methods:<14} {shown:<44} -> {target}  auth={route.auth}")
    for upstream in config.upstreams.values():
        t = upstream.timeouts
        breaker = (
            f"breaker={upstream.circuit_breaker.failures}"
            if upstream.circuit_breaker
            else "breaker=off"
        )
        print(
            f"upstream {upstream.name}  {upstream.load_balancing}  "
            f"endpoints={','.join(upstream.endpoints)}  "
            f"timeouts={t.connect:g}/{t.read:g}/{t.total:g}s  "
            f"retries={upstream.retries.attempts}  {breaker}"
        )
    return config
