"""Gateway fixtures: scripted upstreams and real ``doma-gateway serve`` processes on port 0."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServerProcess, start
from tests.support.upstreams import ScriptedUpstream

UPSTREAM_DEFAULTS = """\
    timeouts: {connect_seconds: 1, read_seconds: 5, total_seconds: 8}
    circuit_breaker: false
    outlier_detection: false
"""


def routes_text(endpoints: list[str], upstream_settings: str = UPSTREAM_DEFAULTS) -> str:
    """An edge with a versioned ``scan`` domain and a plain ``image`` domain, both on ``main``."""
    listed = ", ".join(endpoints)
    return f"""\
layers: [infrastructure, product]
domains:
  image:
    layer: infrastructure
    owner: team-image
    auth: bypass
    upstream: main
    versions:
      v1:
        routes:
          - {{name: everything, path: /**, rewrite: {{prefix: /}}}}
  scan:
    layer: product
    owner: team-scan
    auth: bypass
    depends_on: [image]
    upstream: main
    default_version: v2
    versions:
      v0:
        sunset: 2020-01-01
        routes:
          - {{name: old, path: /**}}
      v1:
        deprecated: 2026-01-01T00:00:00Z
        sunset: 2099-01-01T00:00:00Z
        link: https://docs.example/scan/v2
        routes:
          - {{name: results, path: /results/**, methods: [GET]}}
          - {{name: create, path: /results, methods: [POST]}}
      v2:
        routes:
          - {{name: readonly, path: /items/*, methods: [GET]}}
          - {{name: first, path: /order/**, rewrite: {{prefix: /first}}}}
          - {{name: second, path: /order/b, rewrite: {{prefix: /second}}}}
          - {{name: fixed, path: /fixed, rewrite: {{path: /somewhere/else}}}}
          - {{name: tools, path: /**, rewrite: {{prefix: /}}}}
upstreams:
  main:
    endpoints: [{listed}]
{upstream_settings}"""


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream("a") as server:
        yield server


@pytest.fixture
def upstream_b() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream("b") as server:
        yield server


class Gateway:
    def __init__(self, process: ServerProcess, routes: Path):
        self.process = process
        self.routes = routes
        self.port = process.port("http")
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{process.port('admin')}"

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=20, **kwargs)  # type: ignore[arg-type]


StartGateway = Callable[..., Gateway]


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[StartGateway]:
    started: list[ServerProcess] = []

    def _start(text: str, *extra: str, filename: str = "routes.yaml") -> Gateway:
        routes = tmp_path / filename
        routes.write_text(text)
        process = start(
            [
                "serve",
                "--routes",
                str(routes),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--watch-interval",
                "0.2",
                *extra,
            ]
        )
        started.append(process)
        return Gateway(process, routes)

    yield _start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def shared_upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream("shared") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, shared_upstream: ScriptedUpstream
) -> Iterator[Gateway]:
    """One gateway for a whole module of tests that only read (routing, headers)."""
    routes = tmp_path_factory.mktemp("routes") / "routes.yaml"
    routes.write_text(routes_text([shared_upstream.url]))
    process = start(
        [
            "serve",
            "--routes",
            str(routes),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--no-watch",
        ]
    )
    yield Gateway(process, routes)
    process.stop()
