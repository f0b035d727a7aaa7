"""The container image's file system and environment, laid out on this machine.

``doma-gateway`` is installed in this virtual environment exactly as the build stage installs it
in ``/opt/doma-gateway``; the final stage's ``COPY`` instructions from the build context are
replayed into a temporary ``WORKDIR``, and its ``ENV`` applied with the image's ``PATH`` pointing
at this environment. Commands taken from the Dockerfile then run unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.dockerfile import Stage, copies_from_context, env_of

ROOT = Path(__file__).resolve().parents[2]
IMAGE_VENV_BIN = "/opt/doma-gateway/bin"
VENV_BIN = Path(sys.executable).parent


def image_env(stage: Stage) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in env_of(stage).items():
        value = value.replace(IMAGE_VENV_BIN, str(VENV_BIN))
        env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


def lay_out(stage: Stage, workdir: Path) -> Path:
    """Replays the stage's build-context COPYs into ``workdir`` (the image's WORKDIR)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for sources, dest in copies_from_context(stage):
        for source in sources:
            origin = ROOT / source
            target = workdir / dest
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, target)
    return workdir


def resolve(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` with its program found on the image's PATH, as the container runtime does."""
    program = shutil.which(argv[0], path=env["PATH"])
    assert program is not None, f"{argv[0]} is not on the image's PATH"
    return [program, *argv[1:]]


def require_free(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise AssertionError(
                f"port {port} is in use; the image's command listens there: stop what holds it"
            ) from None


@dataclass
class Container:
    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    stderr: list[str] = field(default_factory=list)

    def event(self, name: str, timeout: float = 20.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == name:
                    return entry
        raise AssertionError(f"no {name!r} event; stderr: {''.join(self.stderr)[-2000:]}")


@contextlib.contextmanager
def run_container(argv: list[str], *, workdir: Path, env: dict[str, str]) -> Iterator[Container]:
    process = subprocess.Popen(
        resolve(argv, env),
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    container = Container(process)
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(process.stdout, container.lines.put), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, container.stderr.append), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        yield container
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)
        for pump in pumps:
            pump.join(2)
        for stream in (process.stdout, process.stderr):
            stream.close()


def _pump(stream, sink) -> None:  # type: ignore[no-untyped-def]
    for line in stream:
        sink(line)


def health(argv: list[str], env: dict[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        resolve(argv, env),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def wait_healthy(
    argv: list[str], env: dict[str, str], workdir: Path, timeout: float = 15.0
) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        result = health(argv, env, workdir)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.2)
