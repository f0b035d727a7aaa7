"""Starting, pinning, waiting for and stopping the processes of one benchmark run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Pinning",
    "cpu_seconds",
    "free_port",
    "pinned",
    "rss_mb",
    "start",
    "stop",
    "wait_for_event",
    "wait_until",
]


class Pinning:
    """Which CPU Envoy gets and which the Python server gets; the same for every case."""

    def __init__(self, envoy_cpu: int | None, authz_cpu: int | None):
        self.envoy_cpu = envoy_cpu
        self.authz_cpu = authz_cpu

    @classmethod
    def default(cls, enabled: bool = True) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(cpus[0], cpus[1])

    def describe(self) -> str:
        if self.envoy_cpu is None:
            return "not pinned (fewer than 2 CPUs, no taskset, or --no-pin)"
        return (
            f"Envoy (--concurrency 1) on CPU {self.envoy_cpu}, the Python ext_authz server on "
            f"CPU {self.authz_cpu}; wrk and nginx unpinned (the kernel runs them where there is "
            "slack); the same layout for every case"
        )


def pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    return list(argv) if cpu is None else ["taskset", "-c", str(cpu), *argv]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process now, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(argv: Sequence[str], log: Path, *, capture_stdout: bool = False) -> subprocess.Popen[str]:
    """A child in its own session, stderr (and stdout unless captured) into ``log``."""
    out: IO[Any] = log.open("a")
    return subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE if capture_stdout else out,
        stderr=out,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def wait_for_event(process: subprocess.Popen[str], event: str, timeout: float) -> dict[str, Any]:
    """The first JSON line on the child's stdout whose ``event`` is ``event``."""
    assert process.stdout is not None
    found: dict[str, Any] = {}
    stream = process.stdout

    def read() -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("event") == event:
                    found.update(message)
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        code = process.poll()
        state = (
            f"exited with code {code}"
            if code is not None
            else f"no {event!r} line in {timeout:g} s"
        )
        raise RuntimeError(f"{process.args[0]}: {state}")
    # Keep draining stdout so the child never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
    return found


def stop(process: subprocess.Popen[Any] | None, timeout: float = 5.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout:g} s")
