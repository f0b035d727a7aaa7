"""A private nginx on a loopback port answering a small 200, so the upstream is never the limit."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from bench.processes import free_port, start, stop, wait_until

__all__ = ["Nginx"]

_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, workdir: Path):
        self.root = workdir / "nginx"
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.root / "nginx.conf"
        config.write_text(_CONFIG.format(root=self.root, port=self.port))
        # -p and -e keep every path (prefix, early error log) inside the private directory.
        self._process = start(
            [binary, "-p", str(self.root), "-e", str(self.root / "error.log"), "-c", str(config)],
            self.root / "stderr.log",
        )
        wait_until(self._accepting, 10.0, "nginx")
        return self

    def _accepting(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            log = (
                (self.root / "error.log").read_text() if (self.root / "error.log").exists() else ""
            )
            raise RuntimeError(f"nginx exited with code {self._process.returncode}: {log[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        stop(self._process)
        self._process = None
