"""``python -m bench.authz``: wrk → Envoy → ext_authz → nginx, every case side by side in one run.

Cases (see ``bench/README.md``): (a) Envoy alone, (b) Envoy + a no-op Python grpc.aio ext_authz,
(c) Envoy's native jwt_authn, (d) doma-gateway authz with a repeated token, (e) doma-gateway
authz verifying RS256 on every request, (f) a no-op on grpc's thread-pool server, (h) a no-op
Python HTTP ext_authz, (i) doma-gateway authz over Envoy's HTTP ext_authz protocol and (j) that
verifying RS256 on every request, all over HTTP/1.1; (k) a no-op Python check and (l)
doma-gateway authz over the same protocol on HTTP/2. Each case: a
warmup, then a fixed measured run with the same wrk connections and threads; a case whose
responses are not all 2xx fails loudly.
Loopback only; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import machine, reports, targets
from bench.cases import ALL_CASES, CASES, DEFAULT_CASES, Case, PythonServer, server_command
from bench.envoy import Envoy, bootstrap
from bench.processes import Pinning, cpu_seconds, rss_mb
from bench.profile import format_summary, record, summarise
from bench.upstream import Nginx
from bench.wrk import WrkResult, run_wrk
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks

PATH = "/api/v1/scan/results"

_ROUTES = """\
auth:
  issuers:
    - issuer: {issuer}
      audiences: [{audience}]
      jwks_file: {jwks}
  claims_to_headers:
    sub: x-user-id
  bypass:
    - /api/v1/*/health
  token:
    cache_size: {cache_size}
  # In-process revocation store and bus: every check consults the revocation cache.
  revocation:
    store: memory://
    bus: memory://
"""


class CaseFailed(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.authz", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=2.0, help="warmup seconds per case")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (every case)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (every case)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every case; the best counts")
    parser.add_argument(
        "--cases", default=DEFAULT_CASES, help="comma-separated keys or labels, or all (a-i)"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin Envoy and the server to CPUs"
    )
    parser.add_argument(
        "--profile", type=float, default=0.0, metavar="SECONDS",
        help="after the table, profile each Python server under load with py-spy for this long",
    )  # fmt: skip
    parser.add_argument(
        "--native", action="store_true", help="py-spy --native (Cython/C frames too)"
    )
    parser.add_argument("--output", type=Path, default=reports.RESULTS / "authz.json")
    return parser


def _selected(spec: str) -> list[Case]:
    if spec == "all":
        spec = ALL_CASES
    wanted = {part.strip() for part in spec.split(",") if part.strip()}
    chosen = [case for case in CASES if case.key in wanted or case.label in wanted]
    unknown = wanted - {c.key for c in chosen} - {c.label for c in chosen}
    if unknown:
        known = ", ".join(f"{c.key}={c.label}" for c in CASES)
        raise SystemExit(f"unknown case(s) {', '.join(sorted(unknown))} (known: {known})")
    return chosen


def _get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:  # noqa: S310
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _preflight(case: Case, url: str, headers: dict[str, str]) -> None:
    """The token gets a 200 and, when the case enforces auth, no token gets a 401."""
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        status = _get(url, headers)
        if status == 200:
            break
        time.sleep(0.1)
    if status != 200:
        raise CaseFailed(f"a request with the token got {status}, not 200")
    if case.enforces and (status := _get(url, {})) != 401:
        raise CaseFailed(
            f"a request without a token got {status}, not 401: auth is not in the path"
        )


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.pinning = Pinning.default(enabled=not args.no_pin)
        self.key = SigningKey()
        self.token = self.key.token(sub="bench-user", exp=int(time.time()) + 3600)
        self.headers = {"authorization": f"Bearer {self.token}"}
        jwks_file = workdir / "jwks.json"
        jwks_file.write_bytes(jwks(self.key))
        self.routes: dict[str, Path] = {}
        for name, cache_size in (("doma", 10_000), ("doma-fresh", 0)):
            path = workdir / f"routes-{name}.yaml"
            path.write_text(
                _ROUTES.format(
                    issuer=ISSUER, audience=AUDIENCE, jwks=jwks_file, cache_size=cache_size
                )
            )
            self.routes[name] = path
        self.upstream = Nginx(workdir).start()

    def close(self) -> None:
        self.upstream.stop()

    def _server(self, name: str) -> PythonServer:
        argv = server_command(name, self.routes)
        return PythonServer(name, argv, self.pinning.authz_cpu, self.workdir).start()

    def _envoy(self, case: Case, authz_port: int) -> Envoy:
        envoy = Envoy(self.workdir, self.pinning.envoy_cpu)
        config = bootstrap(
            case.envoy,
            listen_port=envoy.port,
            admin_port=envoy.admin_port,
            upstream_port=self.upstream.port,
            authz_port=authz_port,
            jwt={
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "jwks": jwks(self.key).decode(),
                "claim_header": ("sub", "x-user-id"),
            },
        )
        return envoy.start(config, case.label)

    def _load(self, envoy: Envoy, seconds: float) -> WrkResult:
        return run_wrk(
            f"http://127.0.0.1:{envoy.port}{PATH}",
            seconds=seconds,
            connections=self.args.connections,
            threads=self.args.threads,
            headers=self.headers,
            workdir=self.workdir,
        )

    def run_case(self, case: Case) -> dict[str, Any]:
        server = self._server(case.server) if case.server else None
        envoy: Envoy | None = None
        try:
            envoy = self._envoy(case, server.port if server else 0)
            _preflight(case, f"http://127.0.0.1:{envoy.port}{PATH}", self.headers)
            if self.args.warmup > 0:
                self._load(envoy, self.args.warmup)
            prefixes = (
                "http.edge.ext_authz.",
                "http.edge.jwt_authn.",
                "cluster.upstream.upstream_rq_",
            )
            stats_before = envoy.stats(*prefixes)
            cache_before = server.token_cache() if server else {}
            pids = {"envoy": envoy.pid, **({"authz": server.pid} if server else {})}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.monotonic()
            result = self._load(envoy, self.args.duration)
            elapsed = time.monotonic() - started
            used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            cpu: dict[str, float] = {
                f"{name}_cpu_percent": round(100 * seconds / elapsed, 1)
                for name, seconds in used.items()
            }
            if server is not None and result.requests:
                # CPU the Python server spent per request: steadier than req/s on a shared box.
                cpu["authz_us_per_check"] = round(1e6 * used["authz"] / result.requests, 1)
            stats = {k: v - stats_before.get(k, 0) for k, v in envoy.stats(*prefixes).items()}
            cache = {
                k: v - cache_before.get(k, 0)
                for k, v in (server.token_cache() if server else {}).items()
            }
            rss = {"authz_rss_mb": round(rss_mb(server.pid), 1)} if server else {}
        finally:
            if envoy is not None:
                envoy.stop()
            if server is not None:
                server.stop()
        outcome = {
            "case": case.key,
            "label": case.label,
            "about": case.about,
            "rps": round(result.rps, 1),
            "requests": result.requests,
            "p50_ms": round(result.p50_ms, 3),
            "p90_ms": round(result.p90_ms, 3),
            "p99_ms": round(result.p99_ms, 3),
            "max_ms": round(result.max_ms, 3),
            "non_2xx": result.non_2xx,
            "socket_errors": result.socket_errors,
            **cpu,
            **rss,
            "envoy_stats": {k: v for k, v in sorted(stats.items()) if v},
            "token_cache": cache,
        }
        _verify(case, outcome, stats)
        return outcome

    def profile(self, case: Case, seconds: float) -> dict[str, Any]:
        """Sample the case's server with py-spy while wrk loads it; not part of the table."""
        assert case.server is not None
        server = self._server(case.server)
        envoy: Envoy | None = None
        output = self.args.output.parent / f"authz-profile-{case.label}.txt"
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            envoy = self._envoy(case, server.port)
            _preflight(case, f"http://127.0.0.1:{envoy.port}{PATH}", self.headers)
            self._load(envoy, 1)
            spy = record(server.pid, seconds, output, native=self.args.native)
            result = self._load(envoy, seconds + 1)
            _, errors = spy.communicate(timeout=seconds + 30)
            if spy.returncode != 0:
                raise RuntimeError(f"py-spy failed: {errors.strip()[-500:]}")
        finally:
            if envoy is not None:
                envoy.stop()
            server.stop()
        summary = summarise(output)
        print(
            format_summary(f"{case.label} at {result.rps:,.0f} req/s (sampled)", summary),
            flush=True,
        )
        return {
            "case": case.key,
            "collapsed_stacks": str(output),
            "rps_while_sampled": round(result.rps, 1),
            **summary,
        }


def _verify(case: Case, outcome: dict[str, Any], stats: dict[str, int]) -> None:
    problems = []
    if outcome["requests"] == 0:
        problems.append("no requests completed")
    if outcome["non_2xx"]:
        problems.append(f"{outcome['non_2xx']} responses with status >= 400")
    if outcome["socket_errors"]:
        problems.append(f"{outcome['socket_errors']} socket errors or timeouts")
    for name in (
        "http.edge.ext_authz.denied",
        "http.edge.ext_authz.error",
        "http.edge.jwt_authn.denied",
    ):
        if stats.get(name):
            problems.append(f"{name} = {stats[name]}")
    checks = stats.get("http.edge.ext_authz.ok", 0) + stats.get("http.edge.jwt_authn.allowed", 0)
    if case.envoy != "none" and checks < outcome["requests"] * 0.9:
        problems.append(f"Envoy counted {checks} allowed checks for {outcome['requests']} requests")
    if case.server in ("doma-fresh", "doma-fresh-http") and outcome["token_cache"].get("hit"):
        problems.append(
            f"the fresh-token case hit the token cache {outcome['token_cache']['hit']:g} times"
        )
    if problems:
        outcome["failed"] = "; ".join(problems)


def _ratio(cases: dict[str, dict[str, Any]], top: str, bottom: str) -> float | None:
    if top in cases and bottom in cases and cases[bottom].get("rps") and "failed" not in cases[top]:
        return round(cases[top]["rps"] / cases[bottom]["rps"], 3)
    return None


RATIOS = (
    ("ours/(b) no-op grpc", "d", "b"),
    ("ours/(c) jwt_authn", "d", "c"),
    ("fresh/(b) no-op grpc", "e", "b"),
    ("ours/(a) envoy alone", "d", "a"),
    ("ours-http/(h) no-op http", "i", "h"),
    ("ours-http/(c) jwt_authn", "i", "c"),
    ("ours-http/(b) no-op grpc", "i", "b"),
    ("fresh-http/(h) no-op http", "j", "h"),
    ("noop-http/(b) no-op grpc", "h", "b"),
    ("noop-http/(c) jwt_authn", "h", "c"),
    ("noop-h2/(c) jwt_authn", "k", "c"),
    ("ours-h2/(k) no-op h2", "l", "k"),
    ("ours-h2/(c) jwt_authn", "l", "c"),
    ("ours-h2/(i) ours-http", "l", "i"),
    ("ours/(f) no-op threads", "d", "f"),
    ("noop-threads/(b) no-op grpc", "f", "b"),
)


_COLUMNS = (("case", "<16"), ("req/s", ">9"), ("p50 ms", ">8"), ("p99 ms", ">8"))
_COLUMNS += (("non-2xx", ">8"), ("envoy cpu", ">10"), ("authz cpu", ">10"), ("us/check", ">9"))
_COLUMNS += (("authz rss", ">10"),)


def _cells(key: str, row: dict[str, Any]) -> tuple[str, ...]:
    name = f"({key}) {row['label']}"
    if "rps" not in row:
        return (name, "FAILED", "", "", "", "", "", "", "")
    authz_cpu = f"{row['authz_cpu_percent']:.0f}%" if "authz_cpu_percent" in row else "-"
    rss = f"{row['authz_rss_mb']:.0f} MB" if "authz_rss_mb" in row else "-"
    per_check = f"{row['authz_us_per_check']:.0f}" if "authz_us_per_check" in row else "-"
    return (
        name,
        f"{row['rps']:,.0f}",
        f"{row['p50_ms']:.2f}",
        f"{row['p99_ms']:.2f}",
        str(row["non_2xx"]),
        f"{row['envoy_cpu_percent']:.0f}%",
        authz_cpu,
        per_check,
        rss,
    )


def _cpu_ratio(cases: dict[str, dict[str, Any]], top: str, bottom: str) -> float | None:
    """How many checks ``top`` does per CPU-second of its server, relative to ``bottom``."""
    a, b = cases.get(top, {}), cases.get(bottom, {})
    if "authz_us_per_check" in a and "authz_us_per_check" in b and "failed" not in a:
        return round(b["authz_us_per_check"] / a["authz_us_per_check"], 3)
    return None


def _table(cases: dict[str, dict[str, Any]]) -> str:
    def line(cells: tuple[str, ...]) -> str:
        return " ".join(f"{cell:{spec}}" for cell, (_, spec) in zip(cells, _COLUMNS, strict=True))

    header = line(tuple(title for title, _ in _COLUMNS))
    lines = [header, "-" * len(header)]
    for key, row in cases.items():
        failed = f"  FAILED: {row['failed']}" if "failed" in row else ""
        lines.append(line(_cells(key, row)).rstrip() + failed)
    return "\n".join(lines)


def _run_one(bench: Bench, case: Case) -> dict[str, Any]:
    try:
        return bench.run_case(case)
    except (CaseFailed, RuntimeError, TimeoutError, OSError) as exc:
        return {"case": case.key, "label": case.label, "failed": str(exc)}


def _progress(case: Case, number: int, outcome: dict[str, Any]) -> None:
    name = f"  ({case.key}) {case.label:<11} round {number}:"
    if "rps" in outcome:
        per_check = outcome.get("authz_us_per_check")
        cpu = "" if per_check is None else f"  authz {per_check:.0f} us CPU/check"
        line = f"{name} {outcome['rps']:>9,.0f} req/s  p99 {outcome['p99_ms']:6.2f} ms{cpu}"
        print(line, flush=True)
    if "failed" in outcome:
        print(f"{name} FAILED: {outcome['failed']}", file=sys.stderr, flush=True)


def _best(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the most req/s (the least disturbed) and the lowest CPU per check.

    Any failed round fails the case.
    """
    measured = [o for o in outcomes if "rps" in o]
    best = dict(max(measured, key=lambda o: o["rps"]) if measured else outcomes[0])
    best["rounds_rps"] = [o.get("rps") for o in outcomes]
    per_check = [o["authz_us_per_check"] for o in outcomes if "authz_us_per_check" in o]
    if per_check:
        # The cheapest round is the least disturbed measurement of what a check costs.
        best["rounds_us_per_check"] = per_check
        best["authz_us_per_check"] = min(per_check)
    failures = [o["failed"] for o in outcomes if "failed" in o]
    if failures:
        best["failed"] = "; ".join(failures)
    return best


def _doma_rss_max(cases: dict[str, dict[str, Any]]) -> float | None:
    """The largest RSS any doma-gateway authz server reached at the end of its load."""
    servers = {case.key: case.server or "" for case in CASES}
    found = [
        row["authz_rss_mb"]
        for key, row in cases.items()
        if servers.get(key, "").startswith("doma") and "authz_rss_mb" in row
    ]
    return max(found) if found else None


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected case in interleaved rounds, best round each; the report as a dict."""
    selected = _selected(args.cases)
    started = time.monotonic()
    load_at_start = machine.load_average()
    with tempfile.TemporaryDirectory(prefix="doma-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        print(f"layout: {bench.pinning.describe()}", flush=True)
        print(
            f"load: wrk -t{args.threads} -c{args.connections}, {args.warmup:g} s warmup + "
            f"{args.duration:g} s per case, {args.rounds} round(s), the best round counts; "
            f"GET {PATH} with one RS256 token",
            flush=True,
        )
        for case in selected:
            print(f"  ({case.key}) {case.label}: {case.about}", flush=True)
        rounds: dict[str, list[dict[str, Any]]] = {case.key: [] for case in selected}
        profiles: list[dict[str, Any]] = []
        try:
            # Rounds interleave the cases, so a burst of load from elsewhere hits all of them.
            for number in range(1, args.rounds + 1):
                for case in selected:
                    outcome = _run_one(bench, case)
                    rounds[case.key].append(outcome)
                    _progress(case, number, outcome)
            if args.profile > 0:
                for case in selected:
                    if case.server is not None:
                        try:
                            profiles.append(bench.profile(case, args.profile))
                        except (CaseFailed, RuntimeError, TimeoutError, OSError) as exc:
                            print(f"profile of {case.label} failed: {exc}", file=sys.stderr)
        finally:
            bench.close()
    cases = {key: _best(outcomes) for key, outcomes in rounds.items()}
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            **machine.describe(),
            "layout": bench.pinning.describe(),
            # Other work on the machine disturbs every number: the load says how much there was.
            "load_average_at_start": load_at_start,
            "load_average_at_end": machine.load_average(),
        },
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "rounds": args.rounds,
            "path": PATH,
        },
        "cases": cases,
        "ratios": {name: _ratio(cases, top, bottom) for name, top, bottom in RATIOS},
        "ratios_per_cpu": {
            name: _cpu_ratio(cases, top, bottom) for name, top, bottom in RATIOS if bottom != "a"
        },
        "memory": {"doma_authz_rss_mb_max": _doma_rss_max(cases)},
        "profiles": profiles,
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def failed(report: dict[str, Any]) -> list[str]:
    """The cases whose verification failed, each with why."""
    return [
        f"authz {key}: {row['failed']}" for key, row in report["cases"].items() if "failed" in row
    ]


def print_report(report: dict[str, Any]) -> None:
    machine_info = report["machine"]
    print()
    print(f"layout: {machine_info['layout']}")
    print(
        f"load average: {machine_info['load_average_at_start']:.2f} at start, "
        f"{machine_info['load_average_at_end']:.2f} at end ({machine_info['cpus']} CPUs)"
    )
    print(_table(report["cases"]))
    print(f"{'ratio':<26} {'req/s':>7} {'per CPU':>8}")
    for name, value in report["ratios"].items():
        if value is not None:
            per_cpu = report["ratios_per_cpu"].get(name)
            print(f"{name:<26} {value:>6.2f}x {'' if per_cpu is None else f'{per_cpu:.2f}x':>8}")
    print(
        "per CPU: checks per CPU-second of the Python server (us/check, lowest round), "
        "less sensitive to other load on the machine than req/s"
    )
    print(targets.format_rows(targets.evaluate({"authz": report})))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = measure(args)
    print_report(report)
    reports.write(args.output, report)
    print(f"{report['wall_seconds']:g} s")
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
