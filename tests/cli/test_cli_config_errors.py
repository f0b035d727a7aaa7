"""The CLI reports configuration errors as file:line: message and exits 1, no traceback."""

import pytest

from tests.support.processes import run

GOOD = (
    "auth:\n  issuers:\n    - issuer: https://i.test\n      audiences: [a]\n"
    "      jwks_url: https://i.test/k\n"
)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (GOOD + "      colour: blue\n", "6:7", "unknown key 'colour'"),
        (GOOD.replace("https://i.test/k", "not a url"), "5:17", "jwks_url must be an http"),
        (
            GOOD.replace("- issuer: https://i.test\n      audiences", "- audiences"),
            "3:7",
            "missing required key 'issuer'",
        ),
    ],
    ids=["unknown key", "bad url", "missing issuer"],
)
def test_authz_with_a_config_error_exits_1_with_its_location(tmp_path, text, where, message):
    routes = tmp_path / "routes.yaml"
    routes.write_text(text)
    result = run(["authz", "--routes", str(routes), "--listen", "127.0.0.1:0", "--no-metrics"])
    assert result.returncode == 1
    assert f"{routes}:{where}: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_authz_with_missing_routes_exits_1():
    result = run(["authz", "--routes", "/nonexistent/routes", "--no-metrics"])
    assert result.returncode == 1
    assert "/nonexistent/routes" in result.stderr and "Traceback" not in result.stderr


def test_check_accepts_the_shipped_routes():
    result = run(["check", "routes"])
    assert result.returncode == 0, result.stderr
    assert "bypass /api/v1/*/health" in result.stdout


def _shipped_routes_with(tmp_path, change):
    """A copy of the shipped routes directory with ``change(directory)`` applied."""
    import shutil

    from tests.support.processes import ROOT

    copy = tmp_path / "routes"
    shutil.copytree(ROOT / "routes", copy)
    change(copy)
    return copy


def _insert_in_scan(directory, anchor: str, line: str) -> None:
    """``line`` added to the shipped scan.yaml right after its first ``anchor`` line."""
    scan = directory / "scan.yaml"
    text = scan.read_text()
    assert anchor in text
    scan.write_text(text.replace(anchor, anchor + line, 1))


def _add_to_scan_v2_policies(directory, entry: str) -> None:
    _insert_in_scan(directory, "          - name: result\n", f"            policies: [{entry}]\n")


def _put_first_in_scan_policies(directory, entry: str) -> None:
    _insert_in_scan(directory, "    policies:\n", f"      - {entry}\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: (d / "auth.yaml").unlink(),
            "requires auth, but no routes file has an 'auth:' section",
        ),
        (
            lambda d: _add_to_scan_v2_policies(d, "{headers: {request: {add: {x-user-id: evil}}}}"),
            "may not write the identity header 'x-user-id'",
        ),
        (
            lambda d: _add_to_scan_v2_policies(d, "inter_domain"),
            "no routes file has an 'inter_domain:' section",
        ),
        (
            lambda d: (
                (d / "inter-domain.yaml").write_text("inter_domain: {token_claim: domain}\n"),
                _put_first_in_scan_policies(d, "inter_domain"),
            ),
            "inter_domain must come after auth when inter_domain.token_claim is set",
        ),
    ],
    ids=[
        "auth without an auth section",
        "identity header rule",
        "inter_domain without section",
        "inter_domain before auth with a token claim",
    ],
)
def test_check_refuses_what_serve_would_refuse(tmp_path, change, message):
    routes = _shipped_routes_with(tmp_path, change)
    checked = run(["check", str(routes)])
    assert checked.returncode == 1, checked.stdout
    assert message in checked.stderr and "Traceback" not in checked.stderr
    served = run(["serve", "--routes", str(routes), "--listen", "127.0.0.1:0",
                  "--admin", "127.0.0.1:0", "--no-watch"])  # fmt: skip
    assert served.returncode == 1
    assert message in served.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["serve", "--routes", "routes", "--watch-interval", "0"],
            "--watch-interval: must be more than 0",
        ),
        (["serve", "--routes", "routes", "--workers", "0"], "--workers: must be at least 1"),
        (["authz", "--routes", "routes", "--grace", "-5"], "--grace: must be 0 seconds or more"),
        (["authz", "--routes", "routes", "--grace", "nan"], "--grace: expected a finite number"),
        (
            ["export", "istio", "routes", "--trust-domain", "Bad Domain/x"],
            "--trust-domain: expected a SPIFFE trust domain",
        ),
        (
            ["export", "istio", "routes", "--edge-namespace", "NOT VALID"],
            "--edge-namespace: expected a Kubernetes namespace",
        ),
    ],
    ids=["watch-interval", "workers", "grace", "grace-nan", "trust-domain", "namespace"],
)
def test_a_bad_number_on_the_command_line_is_a_usage_error(args, message):
    done = run(args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["serve", "--routes", "routes", "--admin", "127.0.0.1:0", "--listen"], "the gateway"),
        (["authz", "--routes", "routes", "--listen", "127.0.0.1:0", "--no-admin", "--metrics"],
         "the metrics listener"),
        (["authz", "--routes", "routes", "--listen", "127.0.0.1:0", "--no-admin", "--no-metrics",
          "--http-listen"], "the HTTP check listener"),
    ],
    ids=["gateway", "metrics", "http-check"],
)  # fmt: skip
def test_a_taken_port_is_one_line_naming_the_listener_and_its_address(args, what):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run([*args, address])
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on {address} ({what}): Address already in use"
    )


def test_check_piped_into_a_reader_that_stops_early_exits_quietly():
    import subprocess
    import sys

    from tests.support.processes import ROOT

    check = subprocess.Popen(
        [sys.executable, "-m", "doma_gateway.cli", "check", "routes"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )  # fmt: skip
    assert check.stdout is not None and check.stderr is not None
    check.stdout.read(1)
    check.stdout.close()  # the reader goes away, as `| head -c1` does
    assert check.wait(timeout=30) == 0
    said = check.stderr.read()
    check.stderr.close()
    assert said == b""
