"""``python -m bench`` (``make bench``): every benchmark case in one run, one table, every target.

Runs the authz cases (``bench/authz.py``: Envoy against each ext_authz server, interleaved
rounds), the gateway cases and its fixed-rate run (``bench/gateway.py``), a memory run on the
full-chain gateway (its RSS sampled under load) and the revocation propagation
(``bench/revocation.py``, fewer rounds). Prints one table: a row per case, then a row per target
with the measured ratio or value, the bound and met / NOT MET. Writes each harness's JSON as its
own command does, and ``summary.json`` beside them with the table's data and the machine.

The exit code is non-zero only when a measurement fails verification (answers other than 2xx,
Envoy's error counters, a revocation that never arrives): a target not met is a result.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import authz, gateway, machine, reports, revocation, targets
from bench.cases import DEFAULT_CASES

__all__ = ["main"]

HARNESSES = ("authz", "gateway", "revocation")
AUTHZ_CASES = DEFAULT_CASES
GATEWAY_CASES = "direct,envoy,doma,doma-chain,doma-same,naive"

# About 7 minutes on a 2-core machine; --quick is a smoke run of the same steps.
_FULL = {"duration": 7.0, "warmup": 2.0, "rounds": 2, "rate_duration": 5.0,
         "memory_seconds": 60.0, "revocation_rounds": 50}  # fmt: skip
_QUICK = {"duration": 1.0, "warmup": 0.0, "rounds": 1, "rate_duration": 1.0,
          "memory_seconds": 3.0, "revocation_rounds": 5}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help="a smoke run: 1 round, 1 s per case, no warmup, short memory and revocation runs",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, help="measured seconds per case (7; quick: 1)")
    parser.add_argument("--warmup", type=float, help="warmup seconds per case (2; quick: 0)")
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds; each case keeps its best (2; quick: 1)"
    )
    parser.add_argument(
        "--rate-duration", type=float, help="seconds of the 1,000 req/s run (5; quick: 1)"
    )
    parser.add_argument(
        "--memory-seconds", type=float,
        help="seconds of the gateway load whose RSS is sampled (60; quick: 3)",
    )  # fmt: skip
    parser.add_argument("--revocation-rounds", type=int, help="revocations per bus (50; quick: 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--only", default=",".join(HARNESSES),
        help=f"comma-separated harnesses to run (default: all of {', '.join(HARNESSES)})",
    )  # fmt: skip
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--output", type=Path, default=reports.RESULTS / "summary.json",
        help="the summary; each harness's JSON is written beside it",
    )  # fmt: skip
    return parser


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options as given, else the quick or the full run's."""
    chosen = _QUICK if args.quick else _FULL
    return {name: default if getattr(args, name) is None else getattr(args, name)
            for name, default in chosen.items()}  # fmt: skip


def _harness_args(name: str, settings: dict[str, Any], args: argparse.Namespace) -> list[str]:
    output = ["--output", str(args.output.parent / f"{name}.json")]
    if name == "revocation":
        return ["--propagation-only", "--rounds", str(settings["revocation_rounds"]), *output]
    common = [
        "--duration", str(settings["duration"]), "--warmup", str(settings["warmup"]),
        "--rounds", str(settings["rounds"]), "--connections", str(args.connections),
        *(["--no-pin"] if args.no_pin else []), *output,
    ]  # fmt: skip
    if name == "authz":
        return [*common, "--cases", AUTHZ_CASES]
    return [
        *common, "--cases", GATEWAY_CASES, "--rate-duration", str(settings["rate_duration"]),
        "--memory-seconds", str(settings["memory_seconds"]),
    ]  # fmt: skip


_MODULES: dict[str, Any] = {"authz": authz, "gateway": gateway, "revocation": revocation}


def _run(name: str, argv: list[str]) -> tuple[dict[str, Any] | None, list[str]]:
    """One harness: its report (written as its own command writes it) and its failures."""
    module = _MODULES[name]
    harness_args = module.parser().parse_args(argv)
    print(f"== {name}", flush=True)
    try:
        report: dict[str, Any] = module.measure(harness_args)
    except Exception as exc:  # one harness failing must not lose the others
        print(f"{name} FAILED: {exc!r}", file=sys.stderr, flush=True)
        return None, [f"{name}: {exc!r}"]
    reports.write(harness_args.output, report)
    failed: Callable[[dict[str, Any]], list[str]] | None = getattr(module, "failed", None)
    return report, failed(report) if failed else []


def _row(
    name: str, source: dict[str, Any], *, rps: float | None = None, **fields: Any
) -> dict[str, Any]:
    return {
        "case": name,
        "rps": source.get("rps") if rps is None else rps,
        "p50_ms": source.get("p50_ms"),
        "p99_ms": source.get("p99_ms"),
        **fields,
        **({"failed": source["failed"]} if "failed" in source else {}),
    }


def _rows(measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A row per case of every harness that ran, in the table's order."""
    rows = []
    for key, case in measured.get("authz", {}).get("cases", {}).items():
        rows.append(_row(f"authz ({key}) {case['label']}", case,
                         server_us_per_request=case.get("authz_us_per_check"),
                         rss_mb=case.get("authz_rss_mb")))  # fmt: skip
    report = measured.get("gateway")
    if report is not None:
        for case in report["throughput"]:
            rows.append(_row(f"gateway {case['case']}", case,
                             server_us_per_request=case.get("proxy_cpu_us_per_request"),
                             rss_mb=case.get("rss_mb")))  # fmt: skip
        for case in report["fixed_rate"]:
            name = f"gateway {case['case']} at {report['settings']['rate']:,.0f} req/s"
            rows.append(_row(name, case))
        trend = report["memory"]["trend"]
        if trend is not None:
            name = f"gateway {trend['case']}, {trend['seconds']:g} s, RSS sampled"
            rows.append(_row(name, trend, rss_mb=trend.get("rss_mb_end")))
    for case in measured.get("revocation", {}).get("propagation", []):
        rows.append(_row(f"revocation via {case['bus']}, 3 instances", case, rps=None))
    return rows


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


_COLUMNS = (
    f"{'case':<40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server us/req':>14} {'RSS MB':>7}"
)


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [_COLUMNS, "-" * len(_COLUMNS)]
    for row in rows:
        line = (
            f"{row['case']:<40} {_cell(row['rps'], ',.0f'):>9} {_cell(row['p50_ms'], '.2f'):>8} "
            f"{_cell(row['p99_ms'], '.2f'):>8} {_cell(row.get('server_us_per_request'), '.0f'):>14}"
            f" {_cell(row.get('rss_mb'), '.0f'):>7}"
        )
        lines.append(line + (f"  FAILED: {row['failed']}" if "failed" in row else ""))
    return "\n".join(lines)


def _notes(measured: dict[str, dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    notes = [
        "req/s, p50, p99: wrk, best round of each case (revocation rows: revoke call -> denied "
        "on each instance). server us/req: CPU of the Python authz server (authz rows, lowest "
        "round) or of the proxy (gateway rows) per request. RSS: at the end of the case's load.",
        "Target ratios by req/s; per CPU: by requests per CPU-second of the server, steadier "
        "when other work shares the machine.",
        f"RSS trend: slope over a {settings['memory_seconds']:g} s load after its first fifth; "
        f"bound {targets.SOAK_RSS_MB_PER_MIN:g} MB/min is the soak's 12 MB over 10 minutes. "
        "Flatness over 10 minutes is measured by `make test-faults`' soak "
        "(docs/reliability.md).",
    ]
    if "authz" in measured:
        notes.append(f"authz layout: {measured['authz']['machine']['layout']}")
        ratios = measured["authz"].get("ratios", {})
        ours, floor = ratios.get("ours-http/(c) jwt_authn"), ratios.get("noop-http/(c) jwt_authn")
        if ours is not None and floor is not None:
            notes.append(
                f"HTTP/1.1 against Envoy jwt_authn (c): doma-http (i) {ours:.2f}x, the no-op "
                f"HTTP/1.1 (h) {floor:.2f}x; Envoy's HTTP/1.1 check client bounds both (the "
                "HTTP rows above are the shipped HTTP/2)."
            )
    envoy_added = measured.get("gateway", {}).get("p99_added_ms_envoy")
    if envoy_added is not None:
        notes.append(
            f"Envoy as proxy added {envoy_added:.2f} ms of p99 at the same fixed rate in this "
            "run: the machine's share of the tail."
        )
    if "gateway" in measured:
        notes.append(
            f"gateway layout: the proxy on CPU {measured['gateway']['machine']['proxy_cpu']}, "
            "wrk, nginx and the driver on the other"
        )
    return notes


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = _settings(args)
    chosen = [name for name in HARNESSES if name in args.only.split(",")]
    started = time.monotonic()
    load_before = machine.load_average()
    measured: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for name in chosen:
        report, failed = _run(name, _harness_args(name, settings, args))
        failures += failed
        if report is not None:
            measured[name] = report
    rows = _rows(measured)
    target_rows = targets.evaluate({name: measured.get(name, {}) for name in chosen})
    elapsed = round(time.monotonic() - started, 1)
    load_after = machine.load_average()
    summary = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine.describe(), "load_average_before": load_before,
                    "load_average_after": load_after},
        "settings": {**settings, "connections": args.connections, "harnesses": chosen},
        "cases": rows,
        "targets": target_rows,
        "failed": failures,
        "wall_seconds": elapsed,
    }  # fmt: skip
    info = summary["machine"]
    print()
    print(
        f"{info['cpu_model']}, {info['cpus']} CPUs; Envoy {info['envoy']}, Python "
        f"{info['python']}, grpcio {info['grpcio']}, uvloop {info['uvloop']}; load average "
        f"{load_before:.2f} before, {load_after:.2f} after"
    )
    print(_table(rows))
    print()
    print(targets.format_rows(target_rows))
    print()
    for note in _notes(measured, settings):
        print(textwrap.fill(note, width=len(_COLUMNS), subsequent_indent="  "))
    reports.write(args.output, summary)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    minutes, seconds = divmod(round(elapsed), 60)
    print(f"elapsed: {minutes} min {seconds} s")
    return 1 if failures else 0
