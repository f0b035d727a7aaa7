"""docs/metrics.md against the live ``/metrics`` of a real authz and a real gateway process.

``promtool check metrics`` (Prometheus' own linter, Debian's ``prometheus`` package; ``make
test`` installs it) must accept what each process exposes, and the reference must list exactly
the metrics they expose, so neither can drift from the other.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import send
from tests.support.processes import ROOT, ServerProcess, start
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey

pytestmark = pytest.mark.e2e

REFERENCE = ROOT / "docs" / "metrics.md"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: run `make test-tools` "
            "(apt-get install prometheus, which ships /usr/bin/promtool)"
        )
    return found


def write_routes(routes: Path) -> None:
    """An auth section with revocation (in memory) and one domain whose upstream refuses."""
    routes.mkdir()
    key = SigningKey()
    (routes / "issuer.pem").write_bytes(key.public_pem)
    (routes / "auth.yaml").write_text(
        "auth:\n"
        "  issuers:\n"
        f"    - issuer: {ISSUER}\n"
        f"      audiences: [{AUDIENCE}]\n"
        "      public_key_file: issuer.pem\n"
        "  claims_to_headers: {sub: x-user-id}\n"
        "  bypass: [/api/v1/scan/open/**]\n"
        "  revocation: {store: 'memory://metrics', bus: 'memory://metrics'}\n"
    )
    (routes / "scan.yaml").write_text(
        "layers: [infrastructure]\n"
        "domains:\n"
        "  scan:\n"
        "    layer: infrastructure\n"
        "    owner: team-scan\n"
        "    upstream: scan-api\n"
        "    versions:\n"
        "      v1:\n"
        "        routes:\n"
        "          - {name: open, path: /open/**, methods: [GET]}\n"
        "upstreams:\n"
        "  scan-api:\n"
        # Port 9 (discard) on loopback: nothing listens, every attempt is refused at once.
        "    endpoints: [http://127.0.0.1:9]\n"
        "    timeouts: {connect_seconds: 0.5, read_seconds: 1, total_seconds: 2}\n"
        "    retries: {attempts: 1, retry_on: [connect_failure]}\n"
        "    circuit_breaker: {failures: 5, reset_seconds: 10}\n"
        "    outlier_detection: {consecutive_failures: 5, ejection_seconds: 30}\n"
    )


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("metrics") / "routes"
    write_routes(path)
    return path


@pytest.fixture(scope="module")
def authz(routes: Path) -> Iterator[ServerProcess]:
    server = start(
        [
            "authz",
            f"--routes={routes}",
            "--listen=127.0.0.1:0",
            "--http-listen=127.0.0.1:0",
            "--metrics=127.0.0.1:0",
            "--no-admin",
        ]
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(routes: Path) -> Iterator[ServerProcess]:
    server = start(
        ["serve", f"--routes={routes}", "--listen=127.0.0.1:0", "--admin=127.0.0.1:0", "--no-watch"]
    )
    try:
        yield server
    finally:
        server.stop()


def authz_metrics(authz: ServerProcess) -> str:
    # A denied and a bypassed check, so the labelled series have samples too.
    send(authz.port("http"), "/api/v1/scan/private")
    send(authz.port("http"), "/api/v1/scan/open/x")
    return send(authz.port("metrics"), "/metrics").body.decode()


def gateway_metrics(gateway: ServerProcess) -> str:
    # Refused by the upstream, retried once: requests, errors, retries and the breaker move.
    assert send(gateway.port("http"), "/api/v1/scan/open/x").status == 503
    return send(gateway.port("admin"), "/metrics").body.decode()


def exposed(text: str) -> set[str]:
    families = list(text_string_to_metric_families(text))
    bases = {family.name for family in families}
    names = set()
    for family in families:
        # The parser reads a counter's or histogram's `_created` samples as a family of its own.
        if family.name.endswith("_created") and family.name.removesuffix("_created") in bases:
            continue
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def documented(section: str) -> set[str]:
    """Metric names in the first column of the tables under ``## `doma-gateway SECTION` ``."""
    text = REFERENCE.read_text()
    start = text.index(f"## `doma-gateway {section}`")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", body, re.MULTILINE))


def run_promtool(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_authz_metrics_pass_promtool(authz):
    text = authz_metrics(authz)
    assert "doma_authz_checks_total{" in text
    result = run_promtool(text)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_gateway_metrics_pass_promtool(gateway):
    text = gateway_metrics(gateway)
    assert "doma_gateway_upstream_errors_total{" in text
    result = run_promtool(text)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_promtool_rejects_a_badly_named_metric():
    """The check above can fail: a counter without ``_total`` is a lint problem for promtool."""
    result = run_promtool("# HELP doma_bad A counter.\n# TYPE doma_bad counter\ndoma_bad 1\n")
    assert result.returncode != 0 and "doma_bad" in result.stdout + result.stderr


def test_every_authz_metric_is_documented_and_nothing_else(authz):
    assert exposed(authz_metrics(authz)) == documented("authz")


def test_every_gateway_metric_is_documented_and_nothing_else(gateway):
    assert exposed(gateway_metrics(gateway)) == documented("serve")
