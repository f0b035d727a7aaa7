"""Hot reload during traffic, rejected configs, SIGHUP, graceful shutdown, workers, one domain."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import StartGateway, routes_text
from tests.support.processes import run, start
from tests.support.upstreams import ScriptedUpstream


def wait_until(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _replace(path: Path, text: str) -> None:
    """Write a new config the way editors and Kubernetes do: a whole new file renamed in."""
    staged = path.with_suffix(".tmp")
    staged.write_text(text)
    os.replace(staged, path)


class _Traffic:
    """Requests in a loop from a few threads, recording every outcome."""

    def __init__(self, url: str, threads: int = 4):
        self.url = url
        self.statuses: list[int] = []
        self.paths: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    reply = client.get(self.url)
                    self.statuses.append(reply.status_code)
                    self.paths.append(reply.json()["path"])
                except Exception as exc:  # every failure counts, whatever its kind
                    self.errors.append(repr(exc))

    def __enter__(self) -> _Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_reload_on_file_change_during_traffic_fails_no_request(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    text = routes_text([upstream.url])
    gateway = start_gateway(text)
    with _Traffic(f"{gateway.url}/api/v2/scan/fixed") as traffic:
        time.sleep(0.5)
        _replace(gateway.routes, text.replace("/somewhere/else", "/moved/here"))
        event = gateway.process.wait_event("reloaded", timeout=10)
        time.sleep(0.5)
    assert event["trigger"] == "file_change"
    assert traffic.errors == []
    assert set(traffic.statuses) == {200}
    assert traffic.paths[0] == "/somewhere/else"
    assert traffic.paths[-1] == "/moved/here"
    assert len(traffic.statuses) > 50


def test_invalid_config_is_rejected_and_the_old_one_keeps_serving(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    text = routes_text([upstream.url])
    gateway = start_gateway(text)
    _replace(
        gateway.routes,
        text.replace("upstream: main\n    default_version", "upstream: mian\n    default_version"),
    )
    event = gateway.process.wait_event("reload_rejected", timeout=10)
    assert f"{gateway.routes}:17:15: upstream 'mian' is not defined (known: main)" in str(
        event["error"]
    )
    # The log line travels on stderr, the event on stdout: wait for the slower pipe.
    wait_until(lambda: "configuration rejected" in gateway.process.stderr(), timeout=5)
    with gateway.client() as client:
        assert client.get("/api/v2/scan/fixed").json()["path"] == "/somewhere/else"
    metrics = httpx.get(f"{gateway.admin}/metrics").text
    assert 'doma_gateway_config_reloads_total{result="rejected"} 1.0' in metrics


def test_sighup_reloads(start_gateway: StartGateway, upstream: ScriptedUpstream):
    text = routes_text([upstream.url])
    gateway = start_gateway(text, "--no-watch")
    _replace(gateway.routes, text.replace("/somewhere/else", "/after/hup"))
    time.sleep(0.3)
    with gateway.client() as client:
        assert client.get("/api/v2/scan/fixed").json()["path"] == "/somewhere/else"
        gateway.process.process.send_signal(signal.SIGHUP)
        assert gateway.process.wait_event("reloaded")["trigger"] == "sighup"
        assert client.get("/api/v2/scan/fixed").json()["path"] == "/after/hup"
    assert httpx.get(f"{gateway.admin}/readyz").json()["generation"] == 2


def test_sigterm_lets_in_flight_requests_finish(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    gateway = start_gateway(routes_text([upstream.url]))
    result: dict[str, int] = {}

    def slow() -> None:
        result["status"] = httpx.get(f"{gateway.url}/api/v2/scan/slow/1", timeout=10).status_code

    thread = threading.Thread(target=slow)
    thread.start()
    while upstream.hits["/slow/1"] == 0:
        time.sleep(0.01)
    gateway.process.process.send_signal(signal.SIGTERM)
    thread.join()
    assert result["status"] == 200
    assert gateway.process.process.wait(10) == 0
    gateway.process.wait_event("stopped")


def test_workers_share_the_listener_and_the_admin_aggregates_metrics(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    gateway = start_gateway(routes_text([upstream.url]), "--workers", "2")
    assert len(gateway.process.listening["workers"]) == 2  # type: ignore[arg-type]
    with gateway.client() as client:
        assert all(client.get("/api/v2/scan/echo").status_code == 200 for _ in range(20))
    metrics = httpx.get(f"{gateway.admin}/metrics").text
    assert (
        'doma_gateway_requests_total{domain="scan",route="tools",status="200",version="v2"} 20.0'
        in metrics
    )
    assert httpx.get(f"{gateway.admin}/readyz").status_code == 200
    gateway.process.process.send_signal(signal.SIGTERM)
    assert gateway.process.process.wait(15) == 0


def test_domain_option_serves_that_domain_only(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    gateway = start_gateway(routes_text([upstream.url]), "--domain", "image")
    with gateway.client() as client:
        assert client.get("/api/v1/image/x").status_code == 200
        assert client.get("/api/v1/scan/results/1").json()["reason"] == "unknown_domain"
    assert gateway.process.listening["domains"] == ["image"]


def test_unknown_domain_option_exits_1(tmp_path, upstream: ScriptedUpstream):
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text([upstream.url]))
    result = run(
        ["serve", "--routes", str(routes), "--domain", "payments", "--listen", "127.0.0.1:0"]
    )
    assert result.returncode == 1
    assert "no domain 'payments' (known: image, scan)" in result.stderr


def test_config_error_exits_1_with_file_line_and_alternatives(tmp_path, upstream: ScriptedUpstream):
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        routes_text([upstream.url])
        .replace("load_balancing", "x")
        .replace("    circuit_breaker: false\n", "    circuit_braker: false\n")
    )
    for command in (
        ["check", str(routes)],
        ["serve", "--routes", str(routes), "--listen", "127.0.0.1:0"],
    ):
        result = run(command)
        assert result.returncode == 1
        assert (
            f"{routes}:42:5: unknown key 'circuit_braker'; did you mean 'circuit_breaker'?"
            in result.stderr
        )
        assert "Traceback" not in result.stderr


def test_check_prints_the_route_table_of_the_shipped_edge():
    result = run(["check", "routes"])
    assert result.returncode == 0, result.stderr
    assert "layers: infrastructure < business-logic < product" in result.stdout
    assert "domain scan  layer=business-logic  owner=team-scan  default_version=v2" in result.stdout
    assert "/api/v1/scan/results/**" in result.stdout
    assert "bypass /api/v1/*/health" in result.stdout


def test_a_process_per_domain_from_the_shipped_routes(upstream: ScriptedUpstream):
    process = start(
        [
            "serve",
            "--routes",
            "routes",
            "--domain",
            "scan",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--no-watch",
        ]
    )
    try:
        routes = httpx.get(f"http://127.0.0.1:{process.port('admin')}/admin/routes").json()
        assert [d["name"] for d in routes["domains"]] == ["scan"]
        assert [u["name"] for u in routes["upstreams"]] == ["scan-api"]
    finally:
        process.stop()


def test_workers_reload_only_what_the_supervisor_validated(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    text = routes_text([upstream.url])
    gateway = start_gateway(text, "--workers", "2")
    _replace(
        gateway.routes,
        text.replace("upstream: main\n    default_version", "upstream: x\n    default_version"),
    )
    assert "upstream 'x' is not defined" in str(
        gateway.process.wait_event("reload_rejected")["error"]
    )
    _replace(gateway.routes, text.replace("/somewhere/else", "/moved/here"))
    gateway.process.wait_event("reloaded")
    deadline = time.monotonic() + 5
    with gateway.client() as client:
        while time.monotonic() < deadline:
            paths = {client.get("/api/v2/scan/fixed").json()["path"] for _ in range(10)}
            if paths == {"/moved/here"}:
                break
            time.sleep(0.05)
    assert paths == {"/moved/here"}
    gateway.process.process.send_signal(signal.SIGTERM)
    assert gateway.process.process.wait(15) == 0


def test_workers_and_supervisor_reject_alike_an_extension_that_cannot_load(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    text = routes_text([upstream.url])
    gateway = start_gateway(text, "--workers", "2")
    broken = text.replace("/somewhere/else", "/never/applied") + (
        "extensions:\n  registered:\n    - name: missing\n      factory: no_such_module:create\n"
        "      points: [pre_route]\n"
    )
    _replace(gateway.routes, broken)
    assert "no_such_module" in str(gateway.process.wait_event("reload_rejected")["error"])
    # Not applied anywhere: the admin listener shows what the workers still serve.
    assert httpx.get(f"{gateway.admin}/readyz").json()["generation"] == 1
    with gateway.client() as client:
        assert client.get("/api/v2/scan/fixed").json()["path"] == "/somewhere/else"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_reload_says_which_start_up_gateway_keys_need_a_restart(
    start_gateway: StartGateway, upstream: ScriptedUpstream, workers: str
):
    text = routes_text([upstream.url]) + "gateway:\n  drain_seconds: 1\n"
    gateway = start_gateway(text, "--workers", workers)
    _replace(gateway.routes, text.replace("drain_seconds: 1", "drain_seconds: 20"))
    notice = gateway.process.wait_event("restart_needed")
    assert (notice["section"], notice["keys"]) == ("gateway", ["drain_seconds"])
    gateway.process.wait_event("reloaded")


def test_a_worker_that_dies_is_replaced_and_serving_goes_on(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    gateway = start_gateway(routes_text([upstream.url]), "--workers", "2")
    listening = gateway.process.listening
    first, second = listening["workers"]  # type: ignore[misc]
    os.kill(first, signal.SIGKILL)
    event = gateway.process.wait_event("worker_restarted", timeout=15)
    assert event["old_pid"] == first
    assert event["exit_code"] == -signal.SIGKILL
    replacement = event["pid"]
    assert replacement not in (first, second)
    wait_until(lambda: httpx.get(f"{gateway.admin}/healthz").status_code == 200, timeout=5)
    with gateway.client() as client:
        statuses = {client.get("/api/v2/scan/fixed").status_code for _ in range(40)}
    assert statuses == {200}
    gateway.process.process.send_signal(signal.SIGTERM)
    assert gateway.process.process.wait(15) == 0
    for pid in (second, replacement):
        wait_until(lambda pid=pid: not _running(pid), timeout=5)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_reload_with_an_extension_whose_factory_raises_is_rejected_with_its_line(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    text = routes_text([upstream.url])
    gateway = start_gateway(text)
    broken = text + (
        "extensions:\n  registered:\n    - name: flags\n"
        "      factory: tests.support.extensions:unreachable_store\n      points: [pre_route]\n"
    )
    _replace(gateway.routes, broken)
    line = broken.splitlines().index("      factory: tests.support.extensions:unreachable_store")
    error = str(gateway.process.wait_event("reload_rejected")["error"])
    assert f"{gateway.routes}:{line + 1}:" in error, error
    assert "RuntimeError: cannot reach the feature store" in error, error
