"""``python -m bench.gateway``: wrk → proxy → nginx, every proxy side by side in one run.

Cases: nginx directly; Envoy (``--concurrency 1``); ``doma-gateway serve`` (one worker) bare,
with the policy chain on (CORS, auth with a repeated token, scopes, a rate limit), with
its aiohttp transport and with httpx's default transport (httpcore); a naive Starlette + httpx
proxy with httpx's default transport and with the ``httpx-aiohttp`` transport. The proxy under
test gets one CPU of its own; wrk, nginx and this driver share the other. Then a fixed-rate run
(wrk at 1,000 req/s, Poisson arrivals over 50 connections) measures the p99 latency the gateway
adds over going direct. With ``--memory-seconds``, a last run loads the full-chain gateway that
long while sampling its RSS, for the trend in MB/min.
Loopback only; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import machine, reports, targets
from bench.envoy import Envoy, bootstrap
from bench.processes import cpu_seconds, free_port, pinned, rss_mb, start, stop, wait_for_event
from bench.upstream import Nginx
from bench.wrk import WrkResult, run_wrk

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
CHAIN_ROUTES = """\
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


# The case the memory trend loads: the full chain holds the most state per request.
MEMORY_CASE = next(case for case in CASES if case.key == "doma-chain")
# Connections of the fixed-rate run: at 1,000 req/s each waits 50 ms on average between its
# requests, far above any latency measured, so a slow answer rarely holds the next one back.
_PACED_CONNECTIONS = 50
# RSS samples per memory run, whatever its length (every 3 s over a minute).
_MEMORY_SAMPLES = 20


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        cpus = sorted(os.sched_getaffinity(0))
        self._driver_cpus = set(cpus)
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
        # Whatever runs after this in the same process gets every CPU back.
        os.sched_setaffinity(0, self._driver_cpus)

    @contextlib.contextmanager
    def proxy(self, case: Case, routes_text: str | None = None) -> Iterator[tuple[int, int | None]]:
        """Start the case's proxy; yields its port and the pid whose CPU is measured.

        ``routes_text`` replaces a ``doma*`` case's routes file (a template with ``{jwks}`` and
        ``{port}``), for variants of the chain (``bench/chain_ablation.py``)."""
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
            if routes_text is not None or case.key == "doma-chain":
                template = routes_text if routes_text is not None else CHAIN_ROUTES
                routes.write_text(template.format(jwks=self.jwks, port=self.nginx.port))
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

    def _headers(self, case: Case) -> dict[str, str] | None:
        return self.chain_headers if case.key in ("doma-chain", "doma-same") else None

    def throughput(self, case: Case, routes_text: str | None = None) -> dict[str, Any]:
        headers = self.chain_headers if routes_text is not None else self._headers(case)
        with self.proxy(case, routes_text) as (port, pid):
            if self.args.warmup > 0:
                self.wrk(port, self.args.warmup, headers)
            cpu_before = cpu_seconds(pid) if pid else 0.0
            started = time.monotonic()
            result = self.wrk(port, self.args.duration, headers)
            elapsed = time.monotonic() - started
            cpu = 100 * (cpu_seconds(pid) - cpu_before) / elapsed if pid else None
            rss = round(rss_mb(pid), 1) if pid else None
        return {
            "case": case.key, "about": case.about, "rps": round(result.rps, 1),
            "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "requests": result.requests,
            "proxy_cpu_percent": round(cpu, 1) if cpu is not None else None,
            # CPU per request: what the proxy itself spends, whatever else the machine runs.
            "proxy_cpu_us_per_request": round(cpu * 1e4 / result.rps, 1) if cpu else None,
            "rss_mb": rss, **_failure(result),
        }  # fmt: skip

    def memory_trend(self, case: Case, seconds: float) -> dict[str, Any]:
        """RSS of the proxy sampled while wrk loads it; the slope after a warm-up, in MB/min."""
        samples: list[tuple[float, float]] = []
        done = threading.Event()
        with self.proxy(case) as (port, pid):
            assert pid is not None

            def sample() -> None:
                started = time.monotonic()
                while True:
                    samples.append((time.monotonic() - started, rss_mb(pid)))
                    if done.wait(seconds / _MEMORY_SAMPLES):
                        return

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                result = self.wrk(port, seconds, self._headers(case))
            finally:
                done.set()
                sampler.join()
        # The first fifth is warm-up (caches filling), as in the soak test.
        steady = [(t, mb) for t, mb in samples if t >= seconds / 5]
        slope = None
        if len(steady) >= 2:
            times, sizes = zip(*steady, strict=True)
            slope = round(60 * statistics.linear_regression(times, sizes).slope, 3)
        return {
            "case": case.key, "seconds": seconds, "rps": round(result.rps, 1),
            "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "requests": result.requests,
            "rss_mb_samples": [[round(t, 1), round(mb, 2)] for t, mb in samples],
            "rss_mb_end": round(samples[-1][1], 1), "mb_per_min": slope, **_failure(result),
        }  # fmt: skip

    def fixed_rate(self, case: Case) -> dict[str, Any]:
        """wrk at ``--rate`` req/s (Poisson arrivals over ``_PACED_CONNECTIONS`` connections)."""
        with self.proxy(case) as (port, _):
            url = f"http://127.0.0.1:{port}{PATH}"

            def paced(seconds: float) -> WrkResult:
                return run_wrk(url, seconds=seconds, connections=_PACED_CONNECTIONS, threads=1,
                               headers={}, workdir=self.workdir, rate=self.args.rate)  # fmt: skip

            if self.args.warmup > 0:
                paced(self.args.warmup)
            result = paced(self.args.rate_duration)
        return {
            "case": case.key, "rate": self.args.rate, "rps": round(result.rps, 1),
            "requests": result.requests, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
            "max_ms": result.max_ms, **_failure(result),
        }  # fmt: skip


def _failure(result: WrkResult) -> dict[str, str]:
    """A ``failed`` entry when wrk saw anything but 2xx answers."""
    if result.non_2xx or result.socket_errors or result.requests == 0:
        why = f"{result.non_2xx} non-2xx, {result.socket_errors} socket errors or timeouts"
        return {"failed": why if result.requests else "no requests completed"}
    return {}


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'case':<15}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'proxy cpu':>11}{'rss':>8}  about"
    ]
    for row in rows:
        if "rps" not in row:
            lines.append(f"{row['case']:<15}  FAILED: {row['failed']}")
            continue
        cpu = f"{row['proxy_cpu_percent']:.0f}%" if row["proxy_cpu_percent"] is not None else "-"
        rss = f"{row['rss_mb']:.0f} MB" if row["rss_mb"] is not None else "-"
        failed = f"  FAILED: {row['failed']}" if "failed" in row else ""
        lines.append(f"{row['case']:<15}{row['rps']:>10,.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
                     f"{cpu:>11}{rss:>8}  {row['about']}{failed}")  # fmt: skip
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="warmup seconds per case")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every case; the best counts")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--rate", type=float, default=1000.0, help="fixed-rate run: requests/s")
    parser.add_argument("--rate-duration", type=float, default=5.0, help="fixed-rate run: seconds")
    parser.add_argument(
        "--memory-seconds", type=float, default=0.0,
        help=f"then load {MEMORY_CASE.key} this long, sampling its RSS (0: no memory run)",
    )  # fmt: skip
    parser.add_argument("--cases", default=",".join(c.key for c in CASES))
    parser.add_argument("--no-pin", action="store_true", help="do not give the proxy its own CPU")
    parser.add_argument("--output", type=Path, default=reports.RESULTS / "gateway.json")
    return parser


def _attempt(label: str, run: Any, case: Case) -> dict[str, Any]:
    """One measurement; a proxy that does not start or answer is a failed row, not a crash."""
    try:
        row: dict[str, Any] = run(case)
    except (RuntimeError, TimeoutError, OSError) as exc:
        row = {"case": case.key, "about": case.about, "failed": str(exc)}
    if "failed" in row:
        print(f"  {label} {case.key}: FAILED: {row['failed']}", file=sys.stderr, flush=True)
    return row


def _better(row: dict[str, Any], kept: dict[str, Any] | None, key: str, most: bool) -> bool:
    """Whether ``row`` replaces the round kept so far: a failed round always sticks."""
    if kept is None or "failed" in row:
        return kept is None or "failed" not in kept
    if "failed" in kept:
        return False
    return row[key] > kept[key] if most else row[key] < kept[key]


def _ratios(by_case: dict[str, dict[str, Any]]) -> dict[str, float]:
    ok = {key: row for key, row in by_case.items() if "failed" not in row}
    ratios: dict[str, float] = {}

    def compare(name: str, top: str, bottom: str) -> None:
        if top in ok and bottom in ok:
            ratios[name] = round(ok[top]["rps"] / ok[bottom]["rps"], 3)
            top_us = ok[top]["proxy_cpu_us_per_request"]
            bottom_us = ok[bottom]["proxy_cpu_us_per_request"]
            if top_us and bottom_us:
                # The throughput ratio a CPU-bound proxy would show: less sensitive to other load.
                ratios[f"{name}_cpu"] = round(bottom_us / top_us, 3)

    compare("doma_vs_envoy", "doma", "envoy")
    compare("doma_vs_naive", "doma", "naive")
    for other in ("doma-aiohttp", "doma-httpcore"):
        compare(f"http1_vs_{other.partition('-')[2]}_transport", "doma", other)
    # The chain against the bare gateway on the same traffic when that case ran, else plain.
    compare("chain_vs_bare", "doma-chain", "doma-same" if "doma-same" in ok else "doma")
    compare("naive_httpx_aiohttp_vs_httpcore", "naive-aiohttp", "naive")
    return ratios


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected case in interleaved rounds, best round each; the report as a dict."""
    wanted = [c for c in CASES if c.key in args.cases.split(",")]
    started = time.monotonic()
    load_at_start = machine.load_average()
    with tempfile.TemporaryDirectory(prefix="doma-bench-gateway-") as tmp:
        bench = Bench(args, Path(tmp))
        memory = None
        try:
            # Rounds interleave the cases so a burst of load from elsewhere on the machine
            # hits every case alike; each case keeps its best round.
            best: dict[str, dict[str, Any]] = {}
            best_paced: dict[str, dict[str, Any]] = {}
            for number in range(1, args.rounds + 1):
                for case in wanted:
                    row = _attempt(f"round {number}", bench.throughput, case)
                    if "rps" in row:
                        print(f"  round {number} {case.key}: {row['rps']:,.0f} req/s", flush=True)
                    if _better(row, best.get(case.key), "rps", most=True):
                        best[case.key] = row
                for case in (c for c in wanted if c.key in ("direct", "envoy", "doma")):
                    row = _attempt(f"round {number} fixed rate", bench.fixed_rate, case)
                    if _better(row, best_paced.get(case.key), "p99_ms", most=False):
                        best_paced[case.key] = row
            if args.memory_seconds > 0:
                memory = _attempt(
                    "memory",
                    lambda case: bench.memory_trend(case, args.memory_seconds),
                    MEMORY_CASE,
                )
            rows = [best[c.key] for c in wanted]
            paced = list(best_paced.values())
        finally:
            bench.close()

    by_case = {row["case"]: row for row in rows}
    paced_by = {row["case"]: row for row in paced if "failed" not in row}
    added = _p99_added(paced_by, "doma")
    # The gateway worker's RSS at the end of each load: the throughput rounds and the memory run.
    worker_rss = [
        row["rss_mb"] for row in rows if row["case"].startswith("doma") and row.get("rss_mb")
    ]
    if memory is not None and "rss_mb_end" in memory:
        worker_rss.append(memory["rss_mb_end"])
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine.describe(), "proxy_cpu": bench.proxy_cpu,
                    "load_average_at_start": load_at_start,
                    "load_average_at_end": machine.load_average()},
        "settings": {"duration": args.duration, "warmup": args.warmup,
                     "connections": args.connections, "rate": args.rate,
                     "rate_duration": args.rate_duration, "rounds": args.rounds,
                     "memory_seconds": args.memory_seconds},
        "throughput": rows, "fixed_rate": paced, "p99_added_ms": added,
        # Envoy through the same run: how much of the tail is the machine's, not the proxy's.
        "p99_added_ms_envoy": _p99_added(paced_by, "envoy"),
        "ratios": _ratios(by_case),
        "memory": {
            "worker_rss_mb_max": max(worker_rss) if worker_rss else None,
            "trend_mb_per_min": memory.get("mb_per_min") if memory and "failed" not in memory
            else None,
            "trend": memory,
        },
        "median_rps": statistics.median(r["rps"] for r in rows if "rps" in r)
        if any("rps" in r for r in rows) else None,
        "wall_seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip


def _p99_added(paced_by: dict[str, dict[str, Any]], case: str) -> float | None:
    """The p99 ``case`` adds over ``direct`` at the fixed rate, when both ran."""
    if "direct" not in paced_by or case not in paced_by:
        return None
    return round(float(paced_by[case]["p99_ms"]) - float(paced_by["direct"]["p99_ms"]), 3)


def failed(report: dict[str, Any]) -> list[str]:
    """The measurements whose verification failed, each with why."""
    rows = [*report["throughput"], *report["fixed_rate"]]
    if report["memory"]["trend"] is not None:
        rows.append(report["memory"]["trend"])
    return [f"gateway {row['case']}: {row['failed']}" for row in rows if "failed" in row]


def print_report(report: dict[str, Any]) -> None:
    settings = report["settings"]
    print()
    print(
        f"wrk -c {settings['connections']} -t 1, {settings['duration']:g} s per case; "
        f"proxy on CPU {report['machine']['proxy_cpu']}"
    )
    print(_table(report["throughput"]))
    for row in report["fixed_rate"]:
        if "failed" not in row:
            print(
                f"fixed rate {row['rate']:,.0f} req/s via {row['case']} ({row['rps']:,.0f} "
                f"sent): p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                f"max {row['max_ms']:.2f} ms"
            )
    trend = report["memory"]["trend"]
    if trend is not None and "failed" not in trend:
        print(
            f"memory: {trend['case']} loaded {trend['seconds']:g} s at {trend['rps']:,.0f} req/s, "
            f"RSS {trend['rss_mb_end']:.1f} MB at the end, trend {trend['mb_per_min']} MB/min"
        )
    for name, value in report["ratios"].items():
        print(f"{name}: {value}")
    print(targets.format_rows(targets.evaluate({"gateway": report})))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = measure(args)
    print_report(report)
    reports.write(args.output, report)
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
