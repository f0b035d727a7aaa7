"""Revocation benchmark: propagation over three instances per bus, and check cost of the cache.

``python -m bench.revocation`` (``make bench-revocation``). Loopback only, about a minute.

1. **Propagation**: three ``doma-gateway authz`` processes share Redis and a bus (RabbitMQ, then
   Redis Pub/Sub). Each round takes a fresh token, checks it once on every instance (so each
   cache holds "not revoked"), revokes it through one instance's API (round robin) and polls all
   three over gRPC until each denies it. The time from the revoke call to each denial is one
   sample; p50/p99 are over all samples.
2. **Check cost**: the decision core in this process (``Authorizer.decide``, no transport),
   deciding checks for a set of tokens: without revocation, with revocation and a warm cache,
   and with the cache disabled (every check reads Redis).

``--propagation-only`` runs part 1 alone (``make bench`` does, with fewer rounds).

Needs Redis and RabbitMQ: ``$REDIS_URL`` / ``$AMQP_URL`` or the loopback defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import jwt
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.check import CheckInput
from authz.core import Authorizer
from authz.grpc_check import AuthorizationServicer
from authz.loader import load_auth_settings
from authz.revocation_client import RevocationClient
from authz.server import AuthzServer
from bench import reports
from doma_gateway.authz_process import build_authz
from doma_gateway.revocation import RevocationStack
from tests.support import processes
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_SCOPE = "doma.revocation.admin"


def routes(
    directory: Path, key: SigningKey, store: str, bus: str, prefix: str, cache: bool = True
) -> Path:
    (directory / "jwks.json").write_bytes(jwks(key))
    path = directory / f"routes-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(
        f"""\
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      jwks_file: jwks.json
  claims_to_headers:
    sub: x-user-id
  revocation:
    store: {store}
    bus: {bus}
    key_prefix: {prefix}
    cache: {{enabled: {str(cache).lower()}}}
"""
    )
    return path


async def _until(revocation: RevocationStack) -> None:
    """Until the stack serves: store reachable, epoch read, bus subscribed."""
    deadline = time.monotonic() + 20
    while not (revocation.ready() and revocation.cache.bus_connected):
        if time.monotonic() > deadline:
            raise TimeoutError("the revocation stack never became ready")
        await asyncio.sleep(0.01)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _request(token: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/api/v1/scan/results"
    http.headers["authorization"] = f"Bearer {token}"
    return request


async def propagation(bus_kind: str, rounds: int, workdir: Path) -> dict[str, object]:
    key = SigningKey()
    bus = AMQP_URL if bus_kind == "amqp" else REDIS_URL
    path = routes(workdir, key, REDIS_URL, bus, f"doma-bench:{uuid.uuid4().hex[:8]}")
    servers = []
    try:
        for _ in range(3):
            servers.append(
                processes.start(
                    [
                        "--log-level",
                        "warning",
                        "authz",
                        "--routes",
                        str(path),
                        "--listen",
                        "127.0.0.1:0",
                        "--no-metrics",
                        "--admin",
                        "127.0.0.1:0",
                    ]
                )
            )
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{s.port('grpc')}") for s in servers]
        stubs = [external_auth_pb2_grpc.AuthorizationStub(c) for c in channels]
        admin = key.token(sub="bench-admin", scope=ADMIN_SCOPE, exp=int(time.time()) + 3600)
        clients = [RevocationClient(str(s.listening["admin"]), admin) for s in servers]

        async def denied(stub, request) -> bool:  # type: ignore[no-untyped-def]
            response = await stub.Check(request, timeout=5)
            return response.HasField("denied_response")

        async def until_denied(stub, request, started: float) -> float:  # type: ignore[no-untyped-def]
            while not await denied(stub, request):
                if time.perf_counter() - started > 5:
                    raise TimeoutError("revocation did not arrive within 5 s")
                # A short pause: three pollers spinning flat out would starve the instances of
                # CPU on a small machine and measure the contention instead of the bus.
                await asyncio.sleep(0.0005)
            return time.perf_counter() - started

        # Wait until every instance serves (keys loaded, bus subscribed).
        warm = _request(key.token())
        for stub in stubs:
            deadline = time.monotonic() + 20
            while await denied(stub, warm):
                assert time.monotonic() < deadline, "instances never became ready"
                await asyncio.sleep(0.05)

        samples: list[float] = []
        for index in range(rounds):
            token = key.token(sub=f"user-{index}")
            claims = jwt.decode(token, options={"verify_signature": False})
            request = _request(token)
            for stub in stubs:
                assert not await denied(stub, request)
            started = time.perf_counter()
            pollers = [asyncio.create_task(until_denied(stub, request, started)) for stub in stubs]
            await clients[index % 3].revoke_token(claims["jti"], claims["exp"])
            samples += await asyncio.gather(*pollers)
        for client in clients:
            await client.close()
        for channel in channels:
            await channel.close()
    finally:
        for server in servers:
            server.stop()
    return {
        "bus": bus_kind,
        "rounds": rounds,
        "samples": len(samples),
        "p50_ms": percentile(samples, 0.5) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "max_ms": max(samples) * 1000,
    }


async def check_cost(seconds: float, workdir: Path) -> list[dict[str, object]]:
    """Best of five interleaved runs per variant and concurrency.

    Interleaving, and keeping the best run, keeps other load on a shared machine from
    favouring whichever variant happened to run in a quiet moment.
    """
    key = SigningKey()
    prefix = f"doma-bench:{uuid.uuid4().hex[:8]}"
    tokens = [key.token(sub=f"user-{i}", exp=int(time.time()) + 3600) for i in range(200)]
    requests = [
        CheckInput("GET", "/api/v1/scan/results", {"authorization": f"Bearer {t}"}) for t in tokens
    ]
    variants = [
        ("no revocation", None),
        ("revocation, warm cache", True),
        ("revocation, cache disabled (Redis per check)", False),
    ]
    stacks, tasks = [], []
    best: dict[tuple[str, int], float] = {}
    try:
        for _, cache in variants:
            settings = load_auth_settings(
                routes(workdir, key, REDIS_URL, AMQP_URL, prefix, cache is not False)
            )
            if cache is None:
                settings = replace(settings, revocation=None)
            stack = build_authz(settings)
            stacks.append(stack)
            tasks.append(asyncio.create_task(stack.run_background()))
            await asyncio.wait_for(stack.keys_ready.wait(), 10)
            if stack.revocation is not None:
                await _until(stack.revocation)
            for request in requests:  # warm the token and revocation caches
                assert (await stack.authorizer.decide(request)).allowed
        for _ in range(5):
            for (name, _), stack in zip(variants, stacks, strict=True):
                for concurrency in (1, 32):
                    started = time.perf_counter()
                    counts = await asyncio.gather(
                        *(
                            _decide_until(stack.authorizer, requests, i, started + seconds / 5)
                            for i in range(concurrency)
                        )
                    )
                    rate = sum(counts) / (time.perf_counter() - started)
                    best[name, concurrency] = max(best.get((name, concurrency), 0.0), rate)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stack in stacks:
            await stack.aclose()
    return [
        {"variant": name, "concurrency": concurrency, "checks_per_second": rate}
        for (name, concurrency), rate in best.items()
    ]


async def grpc_cost(seconds: float, workdir: Path) -> list[dict[str, object]]:
    """Checks/s through the real gRPC Check servicer (client in this process, 32 in flight):
    without revocation and with a warm revocation cache, best of five interleaved runs."""
    key = SigningKey()
    prefix = f"doma-bench:{uuid.uuid4().hex[:8]}"
    tokens = [key.token(sub=f"user-{i}", exp=int(time.time()) + 3600) for i in range(200)]
    requests = [_request(t) for t in tokens]
    variants = [("no revocation", False), ("revocation, warm cache", True)]
    servers, stacks, channels, stubs = [], [], [], []
    best: dict[str, float] = {}
    try:
        for _, revocation in variants:
            settings = load_auth_settings(routes(workdir, key, REDIS_URL, AMQP_URL, prefix))
            if not revocation:
                settings = replace(settings, revocation=None)
            stack = build_authz(settings)
            server = AuthzServer(
                AuthorizationServicer(
                    stack.authorizer, stack.metrics, loop=asyncio.get_running_loop()
                ),
                listen="127.0.0.1:0",
                ready=stack.keys_ready,
                background=stack.run_background,
                readiness=stack.ready,
            )
            await server.start()
            stacks.append(stack)
            servers.append(server)
            await asyncio.wait_for(stack.keys_ready.wait(), 10)
            if stack.revocation is not None:
                await _until(stack.revocation)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            channels.append(channel)
            stubs.append(external_auth_pb2_grpc.AuthorizationStub(channel))
            for request in requests:
                assert (await stubs[-1].Check(request, timeout=5)).HasField("ok_response")

        async def drive(stub, offset: int, deadline: float) -> int:  # type: ignore[no-untyped-def]
            done = 0
            while time.perf_counter() < deadline:
                await stub.Check(requests[(offset + done) % len(requests)], timeout=5)
                done += 1
            return done

        for _ in range(5):
            for (name, _), stub in zip(variants, stubs, strict=True):
                started = time.perf_counter()
                deadline = started + seconds / 5
                counts = await asyncio.gather(*(drive(stub, i, deadline) for i in range(32)))
                rate = sum(counts) / (time.perf_counter() - started)
                best[name] = max(best.get(name, 0.0), rate)
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.shutdown()
        for stack in stacks:
            await stack.aclose()
    return [{"variant": name, "checks_per_second": rate} for name, rate in best.items()]


async def _decide_until(
    authorizer: Authorizer, requests: list[CheckInput], offset: int, deadline: float
) -> int:
    done = 0
    while time.perf_counter() < deadline:
        decision = await authorizer.decide(requests[(offset + done) % len(requests)])
        assert decision.allowed
        done += 1
    return done


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="doma-bench-revocation-") as tmp:
        workdir = Path(tmp)
        report: dict[str, Any] = {
            "propagation": [
                await propagation(bus, args.rounds, workdir) for bus in ("amqp", "redis")
            ],
        }
        if not args.propagation_only:
            report["check_cost"] = await check_cost(args.seconds, workdir)
            report["grpc_check"] = await grpc_cost(args.seconds, workdir)
    return report


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The measurements ``args`` ask for; the report as a dict."""
    return asyncio.run(_measure(args))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.revocation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=200, help="revocations per bus")
    parser.add_argument(
        "--output",
        type=Path,
        default=reports.RESULTS / "revocation.json",
        help="where the JSON goes",
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="duration of each throughput run"
    )
    parser.add_argument(
        "--propagation-only", action="store_true", help="measure the propagation alone"
    )
    return parser


def print_report(report: dict[str, Any]) -> None:
    print("revocation propagation over 3 instances (revoke call -> denied by the instance):")
    for row in report["propagation"]:
        print(
            f"  {row['bus']:>5}: p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
            f"max {row['max_ms']:.2f} ms  ({row['samples']} samples)"
        )
    if "check_cost" not in report:
        return
    print("decision core throughput (in process, 200 tokens, checks/s):")
    base = {
        r["concurrency"]: r["checks_per_second"]
        for r in report["check_cost"]
        if r["variant"] == "no revocation"
    }
    for row in report["check_cost"]:
        ratio = row["checks_per_second"] / base[row["concurrency"]]
        print(
            f"  {row['variant']:<46} concurrency {row['concurrency']:>2}: "
            f"{row['checks_per_second']:>9.0f}  ({ratio:.0%} of no revocation)"
        )
    grpc_rows = report["grpc_check"]
    grpc_base = next(r["checks_per_second"] for r in grpc_rows if r["variant"] == "no revocation")
    print("through the gRPC Check servicer (client in process, 32 in flight, checks/s):")
    for row in grpc_rows:
        ratio = row["checks_per_second"] / grpc_base
        print(
            f"  {row['variant']:<46} {row['checks_per_second']:>9.0f}  "
            f"({ratio:.0%} of no revocation)"
        )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = measure(args)
    print_report(report)
    reports.write(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
