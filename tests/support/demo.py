"""`doma-gateway demo` as a child process: started on free ports, its printed guide read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.processes import ROOT
from tests.support.services import free_port


@dataclass
class Demo:
    process: subprocess.Popen[str]
    guide: str
    port: int
    gateway_port: int

    def stop(self) -> str:
        """Ctrl-C, as a person would; returns what the demo printed after its guide."""
        self.process.send_signal(signal.SIGINT)
        rest, _ = self.process.communicate(timeout=20)
        return rest


@contextmanager
def running_demo() -> Iterator[Demo]:
    port, gateway_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "doma_gateway.cli", "demo",
         "--port", str(port), "--gateway-port", str(gateway_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # Its own process group, so a failed test takes the demo's children down with it.
        start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "the demo exited before printing its guide"
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        yield Demo(process, "".join(lines), port, gateway_port)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
