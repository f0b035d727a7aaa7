"""Real doma-gateway processes for tests: started on port 0, torn down reliably."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    """A running ``doma-gateway`` subcommand; ``listening`` is its announce line."""

    process: subprocess.Popen[str]
    listening: dict[str, object]
    stderr_lines: list[str] = field(default_factory=list)
    stdout_lines: queue.Queue[str] = field(default_factory=queue.Queue)
    pumps: list[threading.Thread] = field(default_factory=list)

    def address(self, name: str) -> tuple[str, int]:
        host, _, port = str(self.listening[name]).rpartition(":")
        return host.strip("[]"), int(port)

    def port(self, name: str) -> int:
        return self.address(name)[1]

    def wait_event(self, event: str, timeout: float = 10.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event!r} event; stderr: {self.stderr()[-2000:]}")
            try:
                line = self.stdout_lines.get(timeout=remaining)
            except queue.Empty:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == event:
                    return dict(entry)

    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for thread in self.pumps:
            thread.join(2)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return self.process.returncode


def _pump(stream, sink) -> None:  # type: ignore[no-untyped-def]
    for line in stream:
        sink(line)


def start(
    args: Sequence[str], *, timeout: float = 20.0, env: dict[str, str] | None = None
) -> ServerProcess:
    """Run ``doma-gateway ARGS`` and wait for its ``listening`` line on stdout."""
    process = subprocess.Popen(
        [sys.executable, "-m", "doma_gateway.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    server = ServerProcess(process, {})
    assert process.stdout is not None and process.stderr is not None
    server.pumps = [
        threading.Thread(target=_pump, args=(process.stdout, server.stdout_lines.put), daemon=True),
        threading.Thread(
            target=_pump, args=(process.stderr, server.stderr_lines.append), daemon=True
        ),
    ]
    for thread in server.pumps:
        thread.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                time.sleep(0.1)
                raise RuntimeError(f"exited with {process.returncode}: {server.stderr()[-3000:]}")
            try:
                server.listening = server.wait_event("listening", timeout=0.2)
                return server
            except TimeoutError:
                continue
        raise TimeoutError(f"never listened: {server.stderr()[-3000:]}")
    except BaseException:
        server.stop(signal.SIGKILL)
        raise


def run(args: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``doma-gateway ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "doma_gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
