"""The CLI reports configuration errors as file:line: message and exits 1, no traceback."""

from tests.support.processes import run


def test_authz_with_unknown_key_exits_1_with_location(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "auth:\n  issuers:\n    - issuer: https://i.test\n      audiences: [a]\n"
        "      jwks_url: https://i.test/k\n      colour: blue\n"
    )
    result = run(["authz", "--routes", str(routes), "--listen", "127.0.0.1:0", "--no-metrics"])
    assert result.returncode == 1
    assert f"{routes}:6:7: unknown key 'colour'" in result.stderr
    assert "Traceback" not in result.stderr


def test_authz_with_missing_routes_exits_1():
    result = run(["authz", "--routes", "/nonexistent/routes", "--no-metrics"])
    assert result.returncode == 1
    assert "/nonexistent/routes" in result.stderr and "Traceback" not in result.stderr


def test_check_accepts_the_shipped_routes():
    result = run(["check", "routes"])
    assert result.returncode == 0, result.stderr
    assert "bypass /api/v1/*/health" in result.stdout
