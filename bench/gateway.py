"""``python -m bench.gateway``: wrk → proxy → nginx, every proxy side by side in one run.

Cases: nginx directly; Envoy (``--concurrency 1``); ``doma-gateway serve`` (one worker) bare,
with the policy chain on (CORS, auth with a repeated token, scopes, a rate limit), with
its aiohttp transport and with httpx's default transport (httpcore); a naive Starlette + httpx
proxy with httpx's default transport and with the ``httpx-aiohttp`` transport. The proxy under
test gets one CPU of its own; wrk, nginx and this driver share the other. Then a fixed-rate run
(1,000 req/s, open loop: latency counts from the scheduled send time, so a stall is not hidden)
measures the p99 latency the gateway adds over going direct. Loopback only; every process is
stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.envoy import Envoy, bootstrap
from bench.processes import free_port, pinned, start, stop, wait_for_event
from bench.upstream import Nginx
from bench.wrk import WrkResult, run_wrk

RESULTS = Path(__file__).resolve().parent / "results"
PATH = "/api/v1/bench/hello"

_ROUTES = """\
layers: [edge]
gateway:
  transport: {transport}
domains:
  bench:
    layer: edge
    owner: bench
    upstream: nginx
    auth: bypass
    versions:
      v1:
        routes:
          - {{name: all, path: /**}}
upstreams:
  nginx:
    endpoints: [http://127.0.0.1:{port}]
"""


# The same edge with the policy chain on: CORS, in-process auth (one repeated token, so the
# verified-token cache is warm, as in steady traffic), scopes and a local rate limit that the
# load never reaches. The bare "doma" case is the same gateway without any of it.
_CHAIN_ROUTES = """\
layers: [edge]
gateway:
  transport: http1
auth:
  issuers:
    - issuer: https://bench.invalid
      audiences: [bench]
      jwks_file: {jwks}
  claims_to_headers:
    sub: x-user-id
domains:
  bench:
    layer: edge
    owner: bench
    upstream: nginx
    policies:
      - cors: {{allow_origins: [https://app.bench.invalid], allow_headers: [authorization]}}
      - auth
      - scopes: {{scopes: [bench.read]}}
      - rate_limit: {{requests: 1000000, period_seconds: 1, limit_by: user}}
    versions:
      v1:
        routes:
          - {{name: all, path: /**}}
upstreams:
  nginx:
    endpoints: [http://127.0.0.1:{port}]
"""


def _chain_credentials(workdir: Path) -> tuple[Path, str]:
    """A JWKS file and a token it verifies (RS256, one hour)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    path = workdir / "bench-jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "bench", "alg": "RS256"}]}))
    now = int(time.time())
    claims = {"iss": "https://bench.invalid", "aud": "bench", "sub": "bench-user",
              "scope": "bench.read", "iat": now, "exp": now + 3600}  # fmt: skip
    return path, jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    about: str


CASES = (
    Case("direct", "wrk → nginx, no proxy: the floor"),
    Case("envoy", "Envoy --concurrency 1, plain HTTP route to the nginx cluster"),
    Case("doma", "doma-gateway serve, 1 worker, its HTTP/1.1 transport (the default)"),
    Case("doma-chain", "doma-gateway serve, 1 worker, chain on: CORS, auth, scopes, rate limit"),
    # The bare gateway sent the chain case's requests (token and Origin): same traffic, no chain.
    Case("doma-same", "doma-gateway serve, 1 worker, no chain, the chain case's request headers"),
    Case("doma-aiohttp", "doma-gateway serve, 1 worker, gateway.transport: aiohttp"),
    Case("doma-httpcore", "doma-gateway serve, 1 worker, gateway.transport: httpcore"),
    Case("naive", "naive Starlette + httpx (httpcore) + StreamingResponse"),
    Case("naive-aiohttp", "the naive proxy with the httpx-aiohttp transport"),
)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        cpus = sorted(os.sched_getaffinity(0))
        self.proxy_cpu: int | None = None
        if len(cpus) >= 2 and not args.no_pin:
            # wrk, nginx and this driver share the first CPU; the proxy gets the last one.
            self.proxy_cpu = cpus[-1]
            os.sched_setaffinity(0, set(cpus[:-1]))
        self.nginx = Nginx(workdir).start()
        self.jwks, token = _chain_credentials(workdir)
        self.chain_headers = {
            "authorization": f"Bearer {token}",
            "origin": "https://app.bench.invalid",
        }

    def close(self) -> None:
        self.nginx.stop()

    @contextlib.contextmanager
    def proxy(self, case: Case) -> Iterator[tuple[int, int | None]]:
        """Start the case's proxy; yields its port and the pid whose CPU is measured."""
        if case.key == "direct":
            yield self.nginx.port, None
            return
        if case.key == "envoy":
            envoy = Envoy(self.workdir, self.proxy_cpu)
            config = bootstrap("none", listen_port=envoy.port, admin_port=envoy.admin_port,
                               upstream_port=self.nginx.port)  # fmt: skip
            envoy.start(config, "gateway-bench")
            try:
                yield envoy.port, envoy.pid
            finally:
                envoy.stop()
            return
        if case.key.startswith("doma"):
            routes = self.workdir / f"routes-{case.key}.yaml"
            transport = {"doma-httpcore": "httpcore", "doma-aiohttp": "aiohttp"}.get(
                case.key, "http1"
            )
            if case.key == "doma-chain":
                routes.write_text(_CHAIN_ROUTES.format(jwks=self.jwks, port=self.nginx.port))
            else:
                routes.write_text(_ROUTES.format(transport=transport, port=self.nginx.port))
            argv = [sys.executable, "-m", "doma_gateway.cli", "--log-level", "warning", "serve",
                    "--routes", str(routes), "--listen", "127.0.0.1:0",
                    "--admin", f"127.0.0.1:{free_port()}", "--no-watch"]  # fmt: skip
        else:
            transport = "httpx-aiohttp" if case.key == "naive-aiohttp" else "httpcore"
            argv = [sys.executable, "-m", "bench.naive_proxy", "--transport", transport,
                    "--upstream", f"http://127.0.0.1:{self.nginx.port}"]  # fmt: skip
        process = start(pinned(self.proxy_cpu, argv), self.workdir / f"{case.key}.log",
                        capture_stdout=True)  # fmt: skip
        try:
            event = wait_for_event(process, "listening", 20)
            yield int(str(event["http"]).rpartition(":")[2]), process.pid
        finally:
            stop(process)

    def wrk(self, port: int, seconds: float, headers: dict[str, str] | None = None) -> WrkResult:
        return run_wrk(f"http://127.0.0.1:{port}{PATH}", seconds=seconds,
                       connections=self.args.connections, threads=1, headers=headers or {},
                       workdir=self.workdir)  # fmt: skip

    def throughput(self, case: Case) -> dict[str, Any]:
        headers = self.chain_headers if case.key in ("doma-chain", "doma-same") else None
        with self.proxy(case) as (port, pid):
            if self.args.warmup > 0:
                self.wrk(port, self.args.warmup, headers)
            cpu_before = _cpu_seconds(pid) if pid else 0.0
            started = time.monotonic()
            result = self.wrk(port, self.args.duration, headers)
            elapsed = time.monotonic() - started
            cpu = 100 * (_cpu_seconds(pid) - cpu_before) / elapsed if pid else None
        if result.non_2xx or result.socket_errors or result.requests == 0:
            raise RuntimeError(
                f"{case.key}: {result.non_2xx} non-2xx, {result.socket_errors} socket errors"
            )
        return {
            "case": case.key, "about": case.about, "rps": round(result.rps, 1),
            "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "requests": result.requests,
            "proxy_cpu_percent": round(cpu, 1) if cpu is not None else None,
            # CPU per request: what the proxy itself spends, whatever else the machine runs.
            "proxy_cpu_us_per_request": round(cpu * 1e4 / result.rps, 1) if cpu else None,
        }  # fmt: skip

    def fixed_rate(self, case: Case) -> dict[str, Any]:
        with self.proxy(case) as (port, _):
            url = f"http://127.0.0.1:{port}{PATH}"
            asyncio.run(_paced(url, self.args.rate, 1.0))
            latencies = asyncio.run(_paced(url, self.args.rate, self.args.rate_duration))
        latencies.sort()
        return {
            "case": case.key, "rate": self.args.rate, "requests": len(latencies),
            "p50_ms": round(_percentile(latencies, 50), 3),
            "p99_ms": round(_percentile(latencies, 99), 3), "max_ms": round(latencies[-1], 3),
        }  # fmt: skip


async def _paced(url: str, rate: float, seconds: float) -> list[float]:
    """Open-loop load: request i is due at start + i/rate; latency is measured from that time."""
    connector = aiohttp.TCPConnector(limit=64)
    latencies: list[float] = []
    failures = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        begin = loop.time() + 0.05
        total = int(rate * seconds)

        async def one(due: float) -> None:
            nonlocal failures
            async with session.get(url) as reply:
                await reply.read()
                if reply.status != 200:
                    failures += 1
            latencies.append((loop.time() - due) * 1000)

        tasks = []
        for index in range(total):
            due = begin + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{failures} non-200 answers at a fixed rate")
    return latencies


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    index = min(len(values) - 1, max(0, round(pct / 100 * len(values)) - 1))
    return values[index]


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'case':<15}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'proxy cpu':>11}  about"]
    for row in rows:
        cpu = f"{row['proxy_cpu_percent']:.0f}%" if row["proxy_cpu_percent"] is not None else "-"
        lines.append(f"{row['case']:<15}{row['rps']:>10,.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
                     f"{cpu:>11}  {row['about']}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="warmup seconds per case")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every case; the best counts")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--rate", type=float, default=1000.0, help="fixed-rate run: requests/s")
    parser.add_argument("--rate-duration", type=float, default=5.0, help="fixed-rate run: seconds")
    parser.add_argument("--cases", default=",".join(c.key for c in CASES))
    parser.add_argument("--no-pin", action="store_true", help="do not give the proxy its own CPU")
    parser.add_argument("--output", type=Path, default=RESULTS / "gateway.json")
    args = parser.parse_args(argv)
    wanted = [c for c in CASES if c.key in args.cases.split(",")]

    with tempfile.TemporaryDirectory(prefix="doma-bench-gateway-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            # Rounds interleave the cases so a burst of load from elsewhere on the machine
            # hits every case alike; each case keeps its best round.
            best: dict[str, dict[str, Any]] = {}
            best_paced: dict[str, dict[str, Any]] = {}
            for number in range(1, args.rounds + 1):
                for case in wanted:
                    row = bench.throughput(case)
                    print(f"  round {number} {case.key}: {row['rps']:,.0f} req/s", flush=True)
                    if case.key not in best or row["rps"] > best[case.key]["rps"]:
                        best[case.key] = row
                for case in (c for c in wanted if c.key in ("direct", "doma")):
                    row = bench.fixed_rate(case)
                    kept = best_paced.get(case.key)
                    if kept is None or row["p99_ms"] < kept["p99_ms"]:
                        best_paced[case.key] = row
            rows = [best[c.key] for c in wanted]
            paced = list(best_paced.values())
        finally:
            bench.close()

    by_case = {row["case"]: row for row in rows}
    ratios: dict[str, float] = {}
    if "doma" in by_case and "envoy" in by_case:
        ratios["doma_vs_envoy"] = round(by_case["doma"]["rps"] / by_case["envoy"]["rps"], 3)
    if "doma" in by_case and "naive" in by_case:
        ratios["doma_vs_naive"] = round(by_case["doma"]["rps"] / by_case["naive"]["rps"], 2)
    for other in ("doma-aiohttp", "doma-httpcore"):
        if "doma" in by_case and other in by_case:
            ratios[f"http1_vs_{other.partition('-')[2]}_transport"] = round(
                by_case["doma"]["rps"] / by_case[other]["rps"], 2
            )
    # The chain against the bare gateway on the same traffic when that case ran, else plain.
    bare_key = "doma-same" if "doma-same" in by_case else "doma"
    if bare_key in by_case and "doma-chain" in by_case:
        bare = by_case[bare_key]
        ratios["chain_vs_bare"] = round(by_case["doma-chain"]["rps"] / bare["rps"], 3)
        bare_us = bare["proxy_cpu_us_per_request"]
        chain_us = by_case["doma-chain"]["proxy_cpu_us_per_request"]
        if bare_us and chain_us:
            # The throughput ratio a CPU-bound proxy would show: less sensitive to other load.
            ratios["chain_vs_bare_cpu"] = round(bare_us / chain_us, 3)
    if "naive" in by_case and "naive-aiohttp" in by_case:
        ratios["naive_httpx_aiohttp_vs_httpcore"] = round(
            by_case["naive-aiohttp"]["rps"] / by_case["naive"]["rps"], 2
        )
    paced_by = {row["case"]: row for row in paced}
    added = None
    if "direct" in paced_by and "doma" in paced_by:
        added = round(paced_by["doma"]["p99_ms"] - paced_by["direct"]["p99_ms"], 3)

    print()
    print(
        f"wrk -c {args.connections} -t 1, {args.duration:g} s per case; "
        f"proxy on CPU {bench.proxy_cpu}"
    )
    print(_table(rows))
    for row in paced:
        print(f"fixed rate {row['rate']:,.0f} req/s via {row['case']}: p50 {row['p50_ms']:.2f} ms, "
              f"p99 {row['p99_ms']:.2f} ms, max {row['max_ms']:.2f} ms")  # fmt: skip
    if added is not None:
        print(
            f"p99 added by the gateway at {args.rate:,.0f} req/s: {added:.2f} ms (target <= 5 ms)"
        )
    for name, value in ratios.items():
        print(f"{name}: {value}")
    vs_envoy, vs_naive = ratios.get("doma_vs_envoy"), ratios.get("doma_vs_naive")
    targets = {
        "doma_vs_envoy >= 0.30": vs_envoy >= 0.30 if vs_envoy is not None else None,
        "doma_vs_naive >= 5": vs_naive >= 5 if vs_naive is not None else None,
        "p99 added <= 5 ms": added <= 5 if added is not None else None,
        "chain_vs_bare >= 0.85": ratios["chain_vs_bare"] >= 0.85
        if "chain_vs_bare" in ratios
        else None,
    }
    for name, met in targets.items():
        if met is not None:
            print(f"target {name}: {'met' if met else 'MISSED'}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "proxy_cpu": bench.proxy_cpu},
        "settings": {"duration": args.duration, "connections": args.connections, "rate": args.rate,
                     "rounds": args.rounds},
        "throughput": rows, "fixed_rate": paced, "p99_added_ms": added, "ratios": ratios,
        "targets": targets,
        "median_rps": statistics.median(r["rps"] for r in rows) if rows else None,
    }, indent=2))  # fmt: skip
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
