"""Bodies larger than the gateway's memory limit stream through both ways; SSE flushes per event."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.conftest import Gateway, StartGateway, routes_text
from tests.support.upstreams import ScriptedUpstream

BODY = 320 * 1024 * 1024
# Address space the gateway may add once serving: far less than one body.
HEADROOM = 128 * 1024 * 1024


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


@pytest.fixture
def limited_gateway(start_gateway: StartGateway, upstream: ScriptedUpstream) -> Iterator[Gateway]:
    gateway = start_gateway(
        routes_text(
            [upstream.url],
            "    timeouts: {connect_seconds: 1, read_seconds: 20, total_seconds: 30}\n",
        ),
        "--no-watch",
    )
    pid = gateway.process.process.pid
    # Warm up the pool and the code paths first, so the limit measures the streaming itself.
    with gateway.client() as client:
        client.post("/api/v2/scan/upload", content=b"x" * 100_000)
        client.get("/api/v2/scan/download/200000")
    limit = _status(pid, "VmSize") + HEADROOM
    resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
    yield gateway
    assert gateway.process.process.poll() is None, gateway.process.stderr()[-2000:]


def _chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    block = b"u" * size
    sent = 0
    while sent < total:
        piece = block[: min(size, total - sent)]
        sent += len(piece)
        yield piece


@pytest.mark.parametrize("with_length", [False, True], ids=["chunked", "content-length"])
def test_download_larger_than_the_memory_limit_streams_through(
    limited_gateway: Gateway, with_length: bool
):
    suffix = "?length=1" if with_length else ""
    received = 0
    with (
        limited_gateway.client() as client,
        client.stream("GET", f"/api/v2/scan/download/{BODY}{suffix}") as reply,
    ):
        assert reply.status_code == 200
        if with_length:
            assert reply.headers["content-length"] == str(BODY)
        for chunk in reply.iter_raw():
            received += len(chunk)
    assert received == BODY


@pytest.mark.parametrize("with_length", [False, True], ids=["chunked", "content-length"])
def test_upload_larger_than_the_memory_limit_streams_through(
    limited_gateway: Gateway, with_length: bool
):
    headers = {"content-length": str(BODY)} if with_length else {}
    with limited_gateway.client() as client:
        reply = client.post("/api/v2/scan/upload", content=_chunks(BODY), headers=headers)
    assert reply.status_code == 200
    assert reply.json() == {"received": BODY}


def test_server_sent_events_are_flushed_as_they_come(gateway: Gateway):
    arrivals = []
    with gateway.client() as client:
        started = time.monotonic()
        with client.stream("GET", "/api/v2/scan/sse/4?gap=0.4") as reply:
            assert reply.headers["content-type"] == "text/event-stream"
            for chunk in reply.iter_raw():
                arrivals.append((time.monotonic() - started, chunk))
    events = b"".join(chunk for _, chunk in arrivals)
    assert events == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"
    # The first event arrives long before the stream ends (4 events 0.4 s apart).
    assert arrivals[0][0] < 0.5
    assert arrivals[-1][0] > 1.1
