"""The cases of the authz benchmark and the servers behind them.

Every case is wrk → Envoy (one worker, its own CPU) → nginx, with a different auth step in
Envoy. The Python servers run as real subprocesses on the other CPU.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.processes import pinned, start, stop, wait_for_event

__all__ = [
    "ALL_CASES",
    "CASES",
    "DEFAULT_CASES",
    "Case",
    "PythonServer",
    "doma_command",
    "server_command",
]


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    label: str
    # "none", "ext_authz" (gRPC), "ext_authz_http1", "ext_authz_http2" (Envoy's HTTP protocol
    # over HTTP/1.1 or HTTP/2) or "jwt_authn": the auth filter in Envoy.
    envoy: str
    # The Python ext_authz server behind Envoy, if any: "noop", "doma", "doma-fresh", ...
    server: str | None
    about: str
    # Whether a request without a token must be refused (proves the filter is in the path).
    enforces: bool


CASES: tuple[Case, ...] = (
    Case("a", "envoy", "none", None, "Envoy alone, no auth filter: the ceiling", enforces=False),
    Case(
        "b", "noop-grpc", "ext_authz", "noop",
        "Envoy + a no-op Python grpc.aio ext_authz (always OK): the Python gRPC floor",
        enforces=False,
    ),
    Case(
        "c", "jwt_authn", "jwt_authn", None,
        "Envoy's native jwt_authn, local_jwks inline, same token, its JWT cache on",
        enforces=True,
    ),
    Case(
        "d", "doma", "ext_authz", "doma",
        "doma-gateway authz, repeated token (verified-token cache warm)",
        enforces=True,
    ),
    Case(
        "e", "doma-fresh", "ext_authz", "doma-fresh",
        "doma-gateway authz with auth.token.cache_size: 0 (RS256 verified on every request)",
        enforces=True,
    ),
    # Envoy's HTTP ext_authz protocol (config/envoy/ext-authz-http.yaml) over HTTP/1.1.
    Case(
        "h", "noop-http", "ext_authz_http1", "noop-http",
        "Envoy + a no-op Python HTTP ext_authz (asyncio protocol on uvloop, always 200)",
        enforces=False,
    ),
    Case(
        "i", "doma-http", "ext_authz_http1", "doma-http",
        "doma-gateway authz over Envoy's HTTP ext_authz protocol (--http-listen), repeated token",
        enforces=True,
    ),
    Case(
        "j", "doma-fresh-http", "ext_authz_http1", "doma-fresh-http",
        "doma-gateway authz over Envoy's HTTP protocol with auth.token.cache_size: 0",
        enforces=True,
    ),
    # The same two, with Envoy speaking HTTP/2 to the check listener (one port serves both).
    Case(
        "k", "noop-h2", "ext_authz_http2", "noop-h2",
        "Envoy + a no-op Python HTTP/2 check (asyncio protocol on uvloop, always 200)",
        enforces=False,
    ),
    Case(
        "l", "doma-h2", "ext_authz_http2", "doma-http",
        "doma-gateway authz over Envoy's HTTP protocol on HTTP/2, repeated token",
        enforces=True,
    ),
    # The floor of doma's own server model: a no-op on grpc's thread-pool server.
    Case(
        "f", "noop-threads", "ext_authz", "noop-threads",
        "Envoy + a no-op on grpc's thread-pool server, doma's server model (32 threads)",
        enforces=False,
    ),
)  # fmt: skip
DEFAULT_CASES = "a,b,c,d,e,f,h,i,j,k,l"
ALL_CASES = ",".join(case.key for case in CASES)


def server_command(name: str, routes: dict[str, Path]) -> list[str]:
    """The command line of the Python server a case names."""
    if name == "noop":
        return [sys.executable, "-m", "bench.noop_authz", "--listen", "127.0.0.1:0"]
    if name == "noop-http":
        return [sys.executable, "-m", "bench.noop_http_authz", "--listen", "127.0.0.1:0"]
    if name == "noop-h2":
        return [sys.executable, "-m", "bench.noop_h2_authz", "--listen", "127.0.0.1:0"]
    if name in ("doma-http", "doma-fresh-http"):
        routes_name = name.removesuffix("-http")
        return [*doma_command(routes[routes_name]), "--http-listen", "127.0.0.1:0"]
    if name == "noop-threads":
        return [sys.executable, "-m", "bench.noop_threads_authz", "--listen", "127.0.0.1:0"]
    return doma_command(routes[name])


def doma_command(routes: Path) -> list[str]:
    script = Path(sys.executable).parent / "doma-gateway"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "doma_gateway.cli"]
    return [
        *base,
        "authz",
        "--routes",
        str(routes),
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]


class PythonServer:
    """An ext_authz server subprocess, pinned, that announces ``{"event": "listening"}``."""

    def __init__(self, name: str, argv: list[str], cpu: int | None, workdir: Path):
        self.name = name
        self._argv = pinned(cpu, argv)
        self._log = workdir / f"{name}.log"
        self._process: subprocess.Popen[str] | None = None
        self.port = 0
        self.metrics_url: str | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> PythonServer:
        self._process = start(self._argv, self._log, capture_stdout=True)
        try:
            listening = wait_for_event(self._process, "listening", timeout=30.0)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{self.name}: {exc}; see {self._log}") from exc
        # An HTTP check listener, when the server has one, is the one the case uses.
        address = listening.get("http") or listening["grpc"]
        self.port = int(str(address).rpartition(":")[2])
        if listening.get("metrics"):
            self.metrics_url = f"http://{listening['metrics']}/metrics"
        return self

    def token_cache(self) -> dict[str, float]:
        """``doma_authz_token_cache_lookups`` by result, read from the server's /metrics."""
        if self.metrics_url is None:
            return {}
        with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:  # noqa: S310 - loopback
            text = reply.read().decode()
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("doma_authz_token_cache_lookups_total{"):
                labels, _, value = line.rpartition(" ")
                result = labels.split('result="', 1)[1].split('"', 1)[0]
                found[result] = float(value)
        return found

    def stop(self) -> None:
        stop(self._process)
        self._process = None


ServerFactory = Callable[[str], PythonServer]
