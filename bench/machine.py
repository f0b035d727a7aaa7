"""What a benchmark ran on: CPU, core count, load and the versions that shape the numbers.

Absolute numbers depend on the machine and on whatever else runs on it, so every report carries
this beside its measurements.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from doma_gateway.envoy_bootstrap import envoy_binary

__all__ = ["cpu_model", "describe", "envoy_version", "load_average"]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def envoy_version() -> str:
    with contextlib.suppress(Exception):
        done = subprocess.run(
            [envoy_binary(), "--version"], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip().rpartition("version: ")[2].split("/")[1]
    return "unknown"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> float:
    """The one-minute load average: how much other work competed for the CPUs."""
    return round(os.getloadavg()[0], 2)


def describe() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "envoy": envoy_version(),
        "grpcio": _package_version("grpcio"),
        "uvloop": _package_version("uvloop"),
    }
