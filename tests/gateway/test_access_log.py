"""``gateway.access_log``: one JSON line per request on stderr, without the query or any header."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time

from gateway.access_log import AccessLog
from tests.gateway.conftest import Gateway, StartGateway, routes_text
from tests.support.processes import run
from tests.support.upstreams import ScriptedUpstream


def _access_lines(gateway: Gateway, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while True:
        lines = [
            json.loads(line)
            for line in gateway.process.stderr().splitlines()
            if '"event": "access"' in line
        ]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_each_request_is_one_access_line_with_route_status_and_no_secrets(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    gateway = start_gateway(routes_text([upstream.url]) + "gateway:\n  access_log: true\n")
    with gateway.client() as client:
        ok = client.get(
            "/api/v2/scan/fixed?token=s3cret",
            headers={"authorization": "Bearer s3cret-too", "x-request-id": "req-1"},
        )
        missing = client.get("/api/v2/nowhere/x")
        bad = client.get("/api/v2/scan/%2e%2e/x")
    assert (ok.status_code, missing.status_code, bad.status_code) == (200, 404, 400)
    first, second, third = _access_lines(gateway, 3)
    assert first["logger"] == "doma.gateway.access"
    assert {k: first[k] for k in ("method", "path", "status", "domain", "version", "route")} == {
        "method": "GET",
        "path": "/api/v2/scan/fixed",
        "status": 200,
        "domain": "scan",
        "version": "v2",
        "route": "fixed",
    }
    assert first["request_id"] == "req-1"
    assert first["client"] == "127.0.0.1"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert (second["status"], second["domain"]) == (404, "")
    assert (third["status"], third["path"]) == (400, "/api/v2/scan/%2e%2e/x")
    assert "s3cret" not in gateway.process.stderr()


def test_no_access_lines_unless_asked(start_gateway: StartGateway, upstream: ScriptedUpstream):
    gateway = start_gateway(routes_text([upstream.url]))
    with gateway.client() as client:
        assert client.get("/api/v2/scan/fixed").status_code == 200
    time.sleep(0.2)
    assert '"event": "access"' not in gateway.process.stderr()


def test_a_bad_value_names_its_file_and_line(tmp_path, upstream: ScriptedUpstream):
    routes = tmp_path / "routes.yaml"
    text = routes_text([upstream.url]) + "gateway:\n  access_log: sometimes\n"
    routes.write_text(text)
    result = run(["check", str(routes)])
    line = text.count("\n")
    assert result.returncode == 1
    assert f"{routes}:{line}:15: expected true or false, got 'sometimes'" in result.stderr


def _line(log: AccessLog, path: str, **fields: object) -> None:
    values: dict[str, object] = {
        "method": "GET", "path": path, "status": 200, "duration_ms": 0.5, "domain": "scan",
        "version": "v1", "route": "all", "request_id": "r", "client": "127.0.0.1",
    }  # fmt: skip
    log.write(**{**values, **fields})  # type: ignore[arg-type]


async def test_lines_wait_for_the_batch_to_age_or_fill():
    stream = io.StringIO()
    log = AccessLog(stream, flush_seconds=0.05, flush_bytes=10_000)
    _line(log, "/a")
    _line(log, "/b", status=404)
    assert stream.getvalue() == ""
    await asyncio.sleep(0.1)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["path"], second["status"]) == ("/a", 404)
    assert (first["logger"], first["event"], first["level"]) == (
        "doma.gateway.access",
        "access",
        "info",
    )
    assert first["time"].endswith("Z")
    full = AccessLog(stream := io.StringIO(), flush_seconds=60, flush_bytes=200)
    for index in range(3):
        _line(full, f"/{index}" + "x" * 80)
    assert len(stream.getvalue().splitlines()) >= 2  # written without waiting a minute
    full.flush()
    assert len(stream.getvalue().splitlines()) == 3


async def test_any_text_in_a_field_stays_one_valid_json_line():
    stream = io.StringIO()
    log = AccessLog(stream)
    nasty = 'a"b\\c\nd\x00e\u2028f\xe9'
    _line(log, "/" + nasty, method=nasty, request_id=nasty)
    log.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert (entry["path"], entry["method"], entry["request_id"]) == ("/" + nasty, nasty, nasty)
    assert entry["duration_ms"] == 0.5


def test_the_last_lines_are_written_at_shutdown(
    start_gateway: StartGateway, upstream: ScriptedUpstream
):
    gateway = start_gateway(routes_text([upstream.url]) + "gateway:\n  access_log: true\n")
    with gateway.client() as client:
        assert client.get("/api/v2/scan/fixed").status_code == 200
    gateway.process.process.send_signal(signal.SIGTERM)
    assert gateway.process.process.wait(15) == 0
    assert '"path": "/api/v2/scan/fixed"' in gateway.process.stderr()
