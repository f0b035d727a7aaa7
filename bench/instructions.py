"""``python -m bench.instructions``: instructions per request of the gateway, counted by callgrind.

The CPU time per request of a 2-core machine shared with other work moves by several
microseconds from one run to the next, which is as much as most changes to the chain are worth.
``valgrind --tool=callgrind`` counts the instructions the gateway process executes instead: the
same count for the same code and requests, whatever else the machine is doing. It does not see
what cold caches cost a busy server (see bench/README.md), so it tells whether a change removes
work, and wall-clock runs tell what that work cost.

Each variant of ``bench.chain_ablation`` gets its own gateway under callgrind, with counting off
while it starts. One keep-alive connection sends the chain case's request (token and ``Origin``)
``--warmup`` times, then counting is switched on for ``--windows`` windows of ``--requests``
each, dumped one by one; the lowest count per request is kept, since a window may also catch
work that runs on a clock rather than per request (uvicorn's tick, a garbage collection). User
space only: the kernel's share is not counted.

    .venv/bin/python -m bench.instructions --variants same,full   # about 10 s per variant
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import chain_ablation, gateway, machine, reports
from bench.processes import free_port, stop, wait_for_event

__all__ = ["count", "main"]


def _valgrind() -> str:
    found = shutil.which("valgrind")
    if found is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind missing: run `make bench-tools` (apt-get install valgrind)")
    return found


class _Client:
    """One keep-alive connection sending the same request and reading each whole answer."""

    def __init__(self, port: int, headers: dict[str, str]):
        lines = [
            f"GET {gateway.PATH} HTTP/1.1",
            "host: bench",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._reader = self._socket.makefile("rb")

    def send(self, times: int) -> None:
        for _ in range(times):
            self._socket.sendall(self._request)
            status = self._reader.readline()
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"the gateway answered {status!r}")
            length = 0
            while (line := self._reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            self._reader.read(length)

    def close(self) -> None:
        self._reader.close()
        self._socket.close()


def count(
    bench: gateway.Bench, routes_text: str, *, warmup: int, requests: int, windows: int
) -> float:
    """Instructions the gateway runs per request for ``routes_text`` (a chain_ablation variant)."""
    valgrind = _valgrind()
    routes = bench.workdir / "routes-instructions.yaml"
    routes.write_text(routes_text.format(jwks=bench.jwks, port=bench.nginx.port))
    output = bench.workdir / "callgrind.out"
    argv = [
        valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={output}",
        sys.executable, "-m", "doma_gateway.cli", "--log-level", "warning", "serve",
        "--routes", str(routes), "--listen", "127.0.0.1:0",
        "--admin", f"127.0.0.1:{free_port()}", "--no-watch",
    ]  # fmt: skip
    # A fixed hash seed: string hashing, and with it dict probing, the same in every run.
    environment = dict(os.environ, PYTHONHASHSEED="0")
    log = (bench.workdir / "callgrind.log").open("w")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=environment)
    try:
        event = wait_for_event(process, "listening", 300)
        client = _Client(int(str(event["http"]).rpartition(":")[2]), bench.chain_headers)
        client.send(warmup)
        pid = str(process.pid)
        subprocess.run(["callgrind_control", "--instr=on", pid], check=True, capture_output=True)
        for _ in range(windows):
            client.send(requests)
            # Each dump writes the window's counts to a file of its own and zeroes them.
            subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
        client.close()
    finally:
        stop(process, timeout=60)
        log.close()
    # callgrind.out.1, .2...: one per dump, so one per window; callgrind.out, written at exit,
    # holds what ran after the last dump (the shutdown) and is not a window.
    parts = sorted(bench.workdir.glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
    totals = [_total(path) for path in parts]
    for path in bench.workdir.glob("callgrind.out*"):
        path.unlink()
    if len(totals) != windows:
        raise RuntimeError(f"callgrind wrote {len(totals)} window counts, not {windows}")
    return min(totals) / requests


def _total(path: Path) -> int:
    """The instructions a callgrind output file counted."""
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--variants", default="same,full")
    parser.add_argument("--requests", type=int, default=500, help="requests per window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--output", type=Path, default=reports.RESULTS / "instructions.json")
    options = parser.parse_args(argv)
    names = options.variants.split(",")
    unknown = sorted(set(names) - set(chain_ablation.VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(chain_ablation.VARIANTS)}")
    settings = gateway.parser().parse_args(["--no-pin"])
    per_request: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        bench = gateway.Bench(settings, Path(workdir))
        try:
            for name in names:
                per_request[name] = count(
                    bench, chain_ablation.VARIANTS[name],
                    warmup=options.warmup, requests=options.requests, windows=options.windows,
                )  # fmt: skip
                print(f"{name:22} {per_request[name]:>10,.0f} instructions/request", flush=True)
        finally:
            bench.close()
    base = per_request.get("same")
    if base:
        for name, value in per_request.items():
            if name != "same":
                print(f"same / {name}: {base / value:.3f}")
    reports.write(
        options.output,
        {"machine": machine.describe(), "settings": vars(options) | {"output": str(options.output)},
         "instructions_per_request": per_request},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
