"""``doma-gateway revoke``: revoke a token (``--jti ID --exp UNIX``) or a subject (``--sub``).

Two ways to reach the revocations:

- through the revocation API of a running authz server (the default, ``--admin HOST:PORT``),
  with an admin token read from ``--token-file`` or ``$DOMA_ADMIN_TOKEN`` (never from the
  command line, where other users could read it). Use this in normal operation: the API checks
  the credential and the server applies the revocation to itself at once.
- ``--direct --routes PATH``: write the store and publish on the bus named in the routes file,
  with no server involved. For operators with access to Redis and RabbitMQ when no authz server
  is reachable (an incident, a script in the cluster). It needs no admin token: access to the
  store is the credential.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from authz.errors import ConfigError, InvalidRevocation, RevocationError
from authz.loader import load_auth_settings
from authz.revocation_client import RevocationApiError, RevocationClient
from authz.revoker import RevokeResult
from doma_gateway.addresses import HostPort, host_port
from doma_gateway.revocation import build_revocation

__all__ = ["add_revoke_parser", "run_revoke"]

TOKEN_ENV = "DOMA_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret


def add_revoke_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    revoke = commands.add_parser(
        "revoke",
        help="revoke a token by jti, or every token of a subject",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--jti", help="the token's jti claim")
    target.add_argument("--sub", help="revoke every token of this subject issued before --before")
    revoke.add_argument("--exp", type=int, metavar="UNIX", help="the token's exp (with --jti)")
    revoke.add_argument(
        "--before",
        type=_time,
        metavar="TIME",
        help="with --sub: Unix seconds or ISO 8601 (2026-01-31T12:00:00Z); default now",
    )
    revoke.add_argument(
        "--admin",
        type=host_port,
        default=host_port("127.0.0.1:9001"),
        metavar="HOST:PORT",
        help="the authz server's admin listener",
    )
    revoke.add_argument(
        "--token-file", type=Path, help=f"file holding the admin bearer token (else ${TOKEN_ENV})"
    )
    revoke.add_argument(
        "--direct", action="store_true", help="write the store and bus of --routes, no server"
    )
    revoke.add_argument("--routes", type=Path, default=Path("routes"), help="with --direct")


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected Unix seconds or ISO 8601, got {text!r}"
        ) from exc


async def run_revoke(args: argparse.Namespace) -> int:
    if args.jti is not None and args.exp is None:
        return _fail("--jti needs --exp (the token's exp, so the revocation expires with it)")
    if args.sub is not None and args.exp is not None:
        return _fail("--exp applies to --jti only")
    if args.jti is not None and args.before is not None:
        return _fail("--before applies to --sub only")
    if args.exp is not None and not 0 < args.exp < 2**63:
        # The API's exp is a signed 64-bit count of seconds, like a token's.
        return _fail(f"--exp {args.exp} is not a Unix time in seconds")
    try:
        result = await (_direct(args) if args.direct else _through_api(args))
    except RevocationApiError as exc:
        return _fail(f"{exc.code}: {exc.message}")
    except (InvalidRevocation, RevocationError) as exc:
        return _fail(str(exc))
    kind, target = ("jti", args.jti) if args.jti is not None else ("subject", args.sub)
    print(
        json.dumps(
            {
                "revoked": kind,
                "target": target,
                "epoch": result.epoch,
                "published": result.published,
                "kept_until": result.kept_until,
            }
        )
    )
    return 0


async def _through_api(args: argparse.Namespace) -> RevokeResult:
    token = _admin_token(args.token_file)
    async with RevocationClient(str(HostPort(args.admin.host, args.admin.port)), token) as client:
        if args.jti is not None:
            return await client.revoke_token(args.jti, args.exp)
        return await client.revoke_subject(args.sub, args.before)


async def _direct(args: argparse.Namespace) -> RevokeResult:
    settings = load_auth_settings(args.routes)
    if settings.revocation is None:
        raise ConfigError(
            "no auth.revocation section: revocation is not configured", file=str(args.routes)
        )
    if settings.revocation.store.startswith("memory:"):
        raise ConfigError(
            "--direct needs a shared store (redis...): "
            "a memory:// store lives inside one authz process",
            file=str(args.routes),
        )
    margin = max(issuer.leeway for issuer in settings.issuers)
    stack = build_revocation(settings.revocation, retention_margin=margin)
    try:
        if args.jti is not None:
            return await stack.revoker.revoke_token(args.jti, float(args.exp))
        return await stack.revoker.revoke_subject(args.sub, args.before)
    finally:
        await stack.close()


def _admin_token(path: Path | None) -> str:
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InvalidRevocation(f"cannot read --token-file: {exc.strerror}") from exc
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise InvalidRevocation(f"an admin token is required: --token-file PATH or ${TOKEN_ENV}")
    return token


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
