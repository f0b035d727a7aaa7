"""``doma-gateway check`` refuses each governance violation and names its file and line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from doma_gateway.cli import main
from tests.support.processes import start

BASE = """\
layers: [infrastructure, business-logic, product]
domains:
  image:
    layer: infrastructure
    owner: team-image
    upstream: image-api
    versions:
      v1:
        routes:
          - {name: health, path: /health, methods: [GET]}
          - {name: images, path: /images/*, methods: [GET, DELETE]}
  scan:
    layer: business-logic
    owner: team-scan
    depends_on: [image]
    upstream: scan-api
    versions:
      v1:
        routes:
          - {name: scan, path: /scans, methods: [POST]}
          - {name: rest, path: /**}
upstreams:
  image-api:
    endpoints: [http://image.local:8000]
  scan-api:
    endpoints: [http://scan.local:8000]
auth:
  issuers:
    - {issuer: https://issuer.test, audiences: [api], jwks_url: https://issuer.test/jwks.json}
"""


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(text)
    code = main(["check", str(routes)])
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).replace(str(routes), "routes.yaml")


def test_a_well_governed_file_passes(tmp_path, capsys):
    code, output = check(tmp_path, BASE, capsys)
    assert code == 0, output
    assert output.rstrip().endswith("ok")


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        (
            "    layer: infrastructure\n    owner: team-image\n",
            "    layer: infrastructure\n    owner: team-image\n    depends_on: [scan]\n",
            "routes.yaml:6:",
            "image (infrastructure) depends on scan (business-logic)",
        ),
        (
            "    layer: infrastructure\n    owner: team-image\n",
            "    layer: business-logic\n    owner: team-image\n    depends_on: [scan]\n",
            "routes.yaml:",
            "dependency cycle: ",
        ),
        (
            "depends_on: [image]",
            "depends_on: [image, billing]",
            "routes.yaml:15:",
            "scan depends on unknown domain 'billing'",
        ),
        (
            "          - {name: rest, path: /**}\n",
            "          - {name: rest, path: /**}\n          - {name: late, path: /scans/*}\n",
            "routes.yaml:22:",
            "route 'late' (/scans/*) can never match",
        ),
        (
            "          - {name: images, path: /images/*, methods: [GET, DELETE]}\n",
            "          - {name: images, path: /images/*, methods: [GET, DELETE]}\n"
            "          - {name: again, path: /images/*, methods: [GET]}\n",
            "routes.yaml:12:",
            "route 'again' (/images/*) can never match",
        ),
        (
            "          - {name: images, path: /images/*, methods: [GET, DELETE]}\n",
            "          - {name: images, path: /images/*/meta, methods: [GET]}\n"
            "          - {name: thumbs, path: /images/thumbs/*, methods: [GET]}\n",
            "routes.yaml:12:",
            "route 'thumbs' (/images/thumbs/*) overlaps route 'images'",
        ),
        (
            "          - {name: scan, path: /scans, methods: [POST]}\n"
            "          - {name: rest, path: /**}\n",
            "          - {name: rest, path: /**, methods: [GET]}\n"
            "          - {name: scan, path: /scans, methods: [GET, POST]}\n",
            "routes.yaml:21:",
            "route 'scan' (/scans) overlaps earlier routes for GET, HEAD",
        ),
        (
            "  scan-api:\n",
            "  spare-api:\n    endpoints: [http://spare.local:8000]\n  scan-api:\n",
            "routes.yaml:25:",
            "upstream 'spare-api' is not used by any route",
        ),
    ],
    ids=[
        "higher layer",
        "cycle",
        "unknown domain",
        "shadowed by a catch-all",
        "shadowed by the same path",
        "partial overlap",
        "overlapping methods",
        "unused upstream",
    ],
)
def test_check_names_the_line_of_each_violation(tmp_path, capsys, old, new, where, message):
    assert old in BASE
    code, output = check(tmp_path, BASE.replace(old, new, 1), capsys)
    assert code == 1
    assert f"error: {where}" in output and message in output, output
    assert "Traceback" not in output


def test_serve_loads_a_file_with_route_findings_and_warns_with_the_line(tmp_path):
    routes = tmp_path / "routes.yaml"
    shadowed = "          - {name: rest, path: /**}\n          - {name: late, path: /scans/*}\n"
    text = BASE.replace("          - {name: rest, path: /**}\n", shadowed)
    routes.write_text(text.replace("    owner: team-", "    auth: bypass\n    owner: team-"))
    server = start(
        ["serve", "--routes", str(routes), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    )
    expected = f"{routes}:24:1: scan v1: route 'late' (/scans/*) can never match"
    try:
        # stderr is read by its own thread: give it a moment to catch up with stdout.
        deadline = time.monotonic() + 5
        while expected not in server.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert expected in server.stderr()
    finally:
        server.stop()
