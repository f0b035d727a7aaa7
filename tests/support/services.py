"""Real Redis and RabbitMQ for tests.

Shared services: ``$REDIS_URL`` / ``$AMQP_URL`` (default: the usual loopback ports) when they
answer; otherwise a private server is started, when installed; otherwise the test fails and says
how to install it. Nothing is ever skipped.

Tests that stop, kill or freeze a server get their OWN private instance on a free port
(:class:`PrivateRedis`, :class:`PrivateRabbit`, :class:`RedisClusterNodes`) and never touch the
shared ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
_RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
_INSTALL_REDIS = "install Redis (Debian/Ubuntu: apt-get install redis-server) or set REDIS_URL"
_INSTALL_RABBIT = (
    "install RabbitMQ (Debian/Ubuntu: apt-get install rabbitmq-server) or set AMQP_URL"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs.

    The socket stays bound without listening: a connection gets a reset, and no other process
    can take the port meanwhile (a port merely found free could be reused by then).
    """
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def unique_prefix(label: str = "t") -> str:
    """A key prefix (and so channel and exchange name) no other test uses."""
    return f"doma-test:{label}:{uuid.uuid4().hex[:10]}"


def _reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with code {process.returncode} before listening on {port}")
        if _reachable(host, port, 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _binary(name: str, hint: str, *candidates: Path) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    pytest.fail(f"{name} is not installed and no shared server answers: {hint}", pytrace=False)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port and free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class PrivateRedis:
    """A redis-server of our own on a free loopback port, without persistence."""

    def __init__(self, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._extra = extra
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="doma-redis-")

    def start(self) -> PrivateRedis:
        binary = _binary("redis-server", _INSTALL_REDIS)
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                *self._extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port("127.0.0.1", self.port, 10, self._process)
        return self

    def stop(self) -> None:
        """Stop like a crash: SIGKILL, nothing flushed (there is nothing to flush)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(5)
        self._process = None

    def freeze(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class PrivateSentinel:
    """A redis-server master plus one ``redis-server --sentinel`` watching it as ``mymaster``."""

    service = "mymaster"

    def __init__(self) -> None:
        self.master = PrivateRedis()
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="doma-sentinel-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}"

    def start(self) -> PrivateSentinel:
        self.master.start()
        config = self._dir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self._dir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 5000\n"
        )
        binary = _binary("redis-server", _INSTALL_REDIS)
        self._process = subprocess.Popen(
            [binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port("127.0.0.1", self.port, 10, self._process)
        return self

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(5)
        self.master.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class RedisClusterNodes:
    """Three ``redis-server --cluster-enabled yes`` masters on loopback, slots spread over all."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [
            PrivateRedis(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{uuid.uuid4().hex[:8]}.conf",
                "--cluster-node-timeout",
                "2000",
                port=_cluster_port(),
            )
            for _ in range(size)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> RedisClusterNodes:
        for node in self.nodes:
            node.start()
        cli = _binary("redis-cli", _INSTALL_REDIS)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        # Each node learns the slot map by gossip on its own schedule; a client that reaches a
        # node still saying CLUSTERDOWN fails, so wait until every node agrees.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(self._node_ready(cli, node.port) for node in self.nodes):
                return self
            time.sleep(0.1)
        raise TimeoutError("the Redis cluster did not reach cluster_state:ok on every node")

    def _node_ready(self, cli: str, port: int) -> bool:
        info = subprocess.run(
            [cli, "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
        return (
            "cluster_state:ok" in info
            and "cluster_slots_ok:16384" in info
            and f"cluster_known_nodes:{len(self.nodes)}" in info
        )

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class PrivateRabbit:
    """A RabbitMQ node of our own: its own node name, ports, epmd, data and log directories.

    It boots in a few seconds and uses a core meanwhile; ``inet_dist_use_interface`` keeps its
    distribution port on loopback.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.name = f"doma{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._dir = Path(tempfile.mkdtemp(prefix="doma-rabbit-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None

    @property
    def _env(self) -> dict[str, str]:
        base = self._dir
        return {
            **os.environ,
            "HOME": str(base),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _tool(self, name: str) -> str:
        candidate = _RABBIT_BIN / name
        return str(candidate) if candidate.exists() else _binary(name, _INSTALL_RABBIT)

    def start(self, timeout: float = 60.0) -> PrivateRabbit:
        server = self._tool("rabbitmq-server")
        (self._dir / "enabled_plugins").write_text("[].\n")
        # guest may log in from loopback only by default; we only listen on loopback anyway.
        (self._dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        epmd = shutil.which("epmd") or next(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"), None)
        if epmd is not None and self._epmd is None:
            # Our own epmd in the foreground, so it is ours to stop (not a stray daemon).
            self._epmd = subprocess.Popen(
                [str(epmd), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self._env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        with (self._dir / "server.log").open("ab") as log:
            self._process = subprocess.Popen(
                [server],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_port("127.0.0.1", self.port, timeout, self._process)
        return self

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run(
            [self._tool("rabbitmqctl"), "-n", self.name, *args],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr.strip()[-500:]}")
        return result.stdout

    def close_all_connections(self) -> None:
        self.ctl("close_all_connections", "closed by a test")

    def kill(self) -> None:
        """Stop like a crash: SIGKILL to the whole node, nothing closed cleanly. ``start`` again
        brings the same node back on the same ports."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(10)
        self._process = None

    def stop(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(Exception):
            self.ctl("shutdown", timeout=30)
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(10)
        self._process = None

    def close(self) -> None:
        self.stop()
        if self._epmd is not None:
            self._epmd.kill()
            self._epmd.wait(5)
            self._epmd = None
        shutil.rmtree(self._dir, ignore_errors=True)


def shared_redis_url() -> tuple[str, PrivateRedis | None]:
    """``$REDIS_URL`` or the loopback default when it answers, else a private server."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    if _reachable(*_host_port(url, 6379)):
        return url, None
    private = PrivateRedis().start()
    return private.url, private


def shared_amqp_url() -> tuple[str, PrivateRabbit | None]:
    url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    if _reachable(*_host_port(url, 5672)):
        return url, None
    if not (_RABBIT_BIN / "rabbitmq-server").exists() and not shutil.which("rabbitmq-server"):
        pytest.fail(
            f"no RabbitMQ answers at {url} and rabbitmq-server is not installed: {_INSTALL_RABBIT}",
            pytrace=False,
        )
    private = PrivateRabbit().start()
    return private.url, private
