"""``doma-gateway``: the command line.

Configuration errors print ``file:line:column: message`` on stderr and exit 1, without a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from authz.errors import ConfigError
from authz.loader import load_auth_settings
from authz.revocation_urls import redact
from doma_gateway.addresses import HostPort, host_port
from doma_gateway.arguments import non_negative_seconds
from doma_gateway.check_command import governance_findings
from doma_gateway.export_command import add_export_parser, run_export
from doma_gateway.graph_command import add_graph_parser, run_graph
from doma_gateway.logs import configure_logging
from doma_gateway.revoke_command import add_revoke_parser, run_revoke
from doma_gateway.serve_command import (
    add_serve_parser,
    has_section,
    print_route_table,
    run_serve_command,
)

__all__ = ["main"]

DEFAULT_ADMIN = HostPort("127.0.0.1", 9001)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doma-gateway", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    authz = commands.add_parser("authz", help="run the Envoy ext-authz gRPC server")
    authz.add_argument(
        "--routes", type=Path, default=Path("routes"), help="routes YAML file or directory"
    )
    authz.add_argument(
        "--listen", type=host_port, default=host_port("0.0.0.0:9000"), metavar="HOST:PORT"
    )
    authz.add_argument(
        "--metrics",
        type=host_port,
        default=host_port("127.0.0.1:9090"),
        metavar="HOST:PORT",
        help="Prometheus /metrics listener (loopback by default)",
    )
    authz.add_argument(
        "--no-metrics", action="store_true", help="do not start the metrics listener"
    )
    authz.add_argument(
        "--grace",
        type=non_negative_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long shutdown waits for in-flight checks",
    )
    authz.add_argument(
        "--admin",
        type=host_port,
        metavar="HOST:PORT",
        help="revocation API listener, when auth.revocation is set (default 127.0.0.1:9001)",
    )
    authz.add_argument("--no-admin", action="store_true", help="do not serve the revocation API")
    authz.add_argument(
        "--http-listen",
        type=host_port,
        default=None,
        metavar="HOST:PORT",
        help="also serve Envoy's HTTP ext_authz protocol (http_service) here",
    )
    authz.add_argument(
        "--http-path-prefix",
        default="",
        metavar="PREFIX",
        help="the http_service path_prefix Envoy puts before the request path",
    )

    check = commands.add_parser(
        "check", help="validate a routes file or directory and print a summary"
    )
    check.add_argument("routes", type=Path)

    add_serve_parser(commands)

    add_revoke_parser(commands)

    add_export_parser(commands)

    add_graph_parser(commands)

    demo = commands.add_parser(
        "demo", help="run both modes on loopback: Envoy + authz, and the edge gateway"
    )
    demo.add_argument("--port", type=int, default=8080, help="Envoy's listener port")
    demo.add_argument(
        "--gateway-port", type=int, default=8000, help="the edge gateway's listener port"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        if args.command == "authz":
            return _run(_authz(args))
        if args.command == "check":
            return _check(args.routes)
        if args.command == "serve":
            return _run(run_serve_command(args))
        if args.command == "revoke":
            return _run(run_revoke(args))
        if args.command == "export":
            return run_export(args)
        if args.command == "graph":
            return run_graph(args)
        if args.command == "demo":
            from doma_gateway.demo import run_demo

            return _run(run_demo(args.port, args.gateway_port))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`check routes | head -1`): nothing left to say to it. Python
        # would complain again when it flushes stdout at exit, so point stdout at nothing first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


def _authz(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from doma_gateway.authz_process import AuthzOptions, run_authz

    return run_authz(
        AuthzOptions(
            routes=args.routes,
            listen=args.listen,
            metrics=None if args.no_metrics else args.metrics,
            grace=args.grace,
            admin=None if args.no_admin else (args.admin or DEFAULT_ADMIN),
            admin_explicit=args.admin is not None,
            http_listen=args.http_listen,
            http_path_prefix=args.http_path_prefix,
        )
    )


def _run(coroutine) -> int:  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(coroutine)  # type: ignore[no-any-return]
    return uvloop.run(coroutine)  # type: ignore[no-any-return]


def _check(path: Path) -> int:
    if not has_section(path, "auth"):
        print_route_table(path)
        if governance_findings(path, has_domains=True):
            return 1
        print("ok")
        return 0
    settings = load_auth_settings(path)
    print(f"auth: {settings.source}")
    for issuer in settings.issuers:
        print(
            f"  issuer {issuer.issuer}  audiences={','.join(issuer.audiences)}  "
            f"keys={issuer.keys.kind}  algorithms={','.join(issuer.algorithms)}  "
            f"leeway={issuer.leeway:g}s"
        )
    for mapping in settings.claims_to_headers:
        print(f"  claim {mapping.claim} -> {mapping.header}")
    for pattern in settings.bypass:
        print(f"  bypass {pattern}")
    if settings.revocation is not None:
        revocation = settings.revocation
        print(
            f"  revocation store={redact(revocation.store)}  bus={redact(revocation.bus)}  "
            f"on_store_error={revocation.on_store_error}  "
            f"epoch_check={revocation.epoch_check_interval:g}s"
        )
    if has_section(path, "domains"):
        print_route_table(path)
    if governance_findings(path, has_domains=has_section(path, "domains")):
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
