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
