"""Policy settings are validated at load time with file:line:column, the chain's order rules
at build time, and the routes JSON Schema agrees with the loader."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from authz.errors import ConfigError
from gateway.metrics import GatewayMetrics
from gateway.routes_loader import load_routes
from gateway.runtime import build_runtime
from gateway.transport import build_transport
from tests.support.processes import run

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "routes" / "schema.json").read_text())


def routes(domain_policies: str = "[]", route_policies: str = "[]", auth: str = "bypass") -> str:
    return f"""\
layers: [product]
domains:
  shop:
    layer: product
    owner: team
    upstream: api
    auth: {auth}
    policies: {domain_policies}
    versions:
      v1:
        routes:
          - path: /**
            policies: {route_policies}
upstreams:
  api:
    endpoints: [http://api.internal]
"""


BROKEN = [
    ("[{rate_limit: {period_seconds: 1}}]", r":8:\d+: missing required key 'requests'"),
    ("[{rate_limit: {requests: 5, limit_by: header}}]", r"limit_by: header needs header_name"),
    ("[{rate_limit: {requests: 5, store: 'mysql://x'}}]", r"store must be 'local' or a Redis"),
    ("[{rate_limit: {requests: 5, store: 'redis://h:99999/0'}}]", r"bad port '99999'"),
    ("[{rate_limit: {requests: 0}}]", r"must be at least 1"),
    (
        "[{rate_limit: {requests: 10000000, period_seconds: 1, burst: 1}}]",
        r"more than one request per microsecond, finer than a bucket counts \(at most 1000000",
    ),
    (
        "[{rate_limit: {requests: 2000, period_seconds: 0.001}}]",
        r"at most 1000 per 0.001 s",
    ),
    ("[{cors: {allow_origins: ['app.example']}}]", r"must be '\*', scheme://host"),
    (
        "[{cors: {allow_origins: ['*'], allow_credentials: true}}]",
        r"allow_origins '\*' cannot be combined with allow_credentials",
    ),
    (
        "[{cors: {allow_origins: ['https://*.com'], allow_credentials: true}}]",
        r"'https://\*\.com': a wildcard needs a domain of two labels or more",
    ),
    ("[{cors: {allow_origins: ['https://*.io']}}]", r"a wildcard needs a domain of two labels"),
    ("[{cors: {allow_origins: ['https://app.example:70000']}}]", r"port 70000 is not between"),
    ("[{cors: {allow_origins: []}}]", r"allow_origins is empty"),
    ("[{cors: {allow_origins: ['*'], allow_methods: []}}]", r"allow_methods is empty"),
    (
        "[{cors: {allow_origin: ['*']}}]",
        r"unknown key 'allow_origin'; did you mean 'allow_origins'",
    ),
    ("[{ip_restriction: {allow: [10.0.0.0/33]}}]", r"is not an IP address or CIDR range"),
    ("[ip_restriction]", r":8:\d+: ip_restriction needs allow, deny or both"),
    ("[{request_limits: {methods: [get]}}]", r"is not an HTTP method"),
    ("[{headers: {request: {add: {host: x}}}}]", r"is set by the gateway itself"),
    ("[{auth: {ext_authz: {grpc_service: nowhere}}}]", r"grpc_service must be HOST:PORT"),
    ("[{scopes: {}}]", r"scopes needs 'scopes', 'roles' or both"),
    ("[{cors: {allow_origins: ['*']}}, {cors: {allow_origins: ['*']}}]", r"'cors' is listed twice"),
    ("[{nonsense: {}}]", r"unknown policy 'nonsense' \(known: auth, scopes"),
    ("[{cors: {allow_origins: ['*'], allow_headers: ['x y']}}]", r"'x y' is not a header name"),
    ("[{cors: {allow_origins: ['*'], expose_headers: ['a:b']}}]", r"'a:b' is not a header name"),
    ("[{cors: {allow_origins: ['*'], allow_methods: ['GE T']}}]", r"'GE T' is not an HTTP method"),
    (
        "[{rate_limit: {requests: 5, limit_by: header, header_name: 'x key'}}]",
        r"'x key' is not a header name",
    ),
    (
        "[{auth: {ext_authz: {grpc_service: 'a:1', identity_headers: ['x\\nid']}}}]",
        r"is not a header name",
    ),
]


@pytest.mark.parametrize(("policies", "message"), BROKEN, ids=[m for _, m in BROKEN])
def test_a_wrong_setting_names_its_line_and_the_schema_refuses_it_too(
    tmp_path: Path, policies: str, message: str
):
    text = routes(domain_policies=policies)
    (tmp_path / "routes.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as raised:
        load_routes(tmp_path / "routes.yaml")
    assert str(raised.value).startswith(str(tmp_path / "routes.yaml") + ":8:")
    # What a JSON Schema cannot express (CIDR arithmetic, names the gateway reserves, order,
    # the port inside a URL).
    if not any(
        word in message
        for word in ("twice", "CIDR", "gateway itself", "bad port", "between", "at most")
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load(text))


def _build(tmp_path: Path, text: str) -> None:
    (tmp_path / "routes.yaml").write_text(text)
    build_runtime(
        load_routes(tmp_path / "routes.yaml"),
        transport=build_transport("http1"),
        metrics=GatewayMetrics(CollectorRegistry()),
    )


def test_scopes_need_an_auth_policy_before_them_and_check_says_where(tmp_path: Path):
    (tmp_path / "routes.yaml").write_text(routes(route_policies="[{scopes: {scopes: [a]}}]"))
    with pytest.raises(ConfigError, match=r"routes.yaml:13: route shop v1 /\*\*: scopes needs"):
        load_routes(tmp_path / "routes.yaml")


def test_a_rate_limit_by_user_must_come_after_auth(tmp_path: Path):
    limit = "{rate_limit: {requests: 1, limit_by: user}}"
    auth = "{auth: {ext_authz: {grpc_service: '127.0.0.1:1'}}}"
    (tmp_path / "routes.yaml").write_text(
        routes(domain_policies=f"[{limit}, {auth}]", auth="required")
    )
    with pytest.raises(ConfigError, match="a rate_limit by user must come after auth"):
        load_routes(tmp_path / "routes.yaml")
    # After auth, or by address before it, is fine.
    for policies in (f"[{auth}, {limit}]", f"[{limit.replace('user', 'client_ip')}, {auth}]"):
        (tmp_path / "routes.yaml").write_text(routes(domain_policies=policies, auth="required"))
        load_routes(tmp_path / "routes.yaml")


def test_cors_must_come_before_auth(tmp_path: Path):
    text = routes(
        domain_policies="[{auth: {ext_authz: {grpc_service: '127.0.0.1:1'}}}]",
        route_policies="[{cors: {allow_origins: ['*']}}]",
        auth="required",
    )
    with pytest.raises(ConfigError, match="cors must come before auth"):
        _build(tmp_path, text)


@pytest.mark.parametrize("target", ["x-user-id", "x_user_id", "x-user_id", "x_user-id"])
def test_header_rules_may_not_write_an_identity_header(tmp_path: Path, target: str):
    (tmp_path / "routes.yaml").write_text(
        routes(route_policies=f"[{{headers: {{request: {{rename: {{x-client: {target}}}}}}}}}]")
    )
    with pytest.raises(ConfigError, match=f"may not write the identity header '{target}'"):
        build_runtime(
            load_routes(tmp_path / "routes.yaml"),
            transport=build_transport("http1"),
            metrics=GatewayMetrics(CollectorRegistry()),
            identity_headers=("x-user-id",),
        )


def test_a_route_entry_replaces_the_domain_entry_of_the_same_name_in_place(tmp_path: Path):
    from gateway.policies.chain import effective_policies

    text = routes(
        domain_policies="[{cors: {allow_origins: ['*']}}, {rate_limit: {requests: 5}}, auth]",
        route_policies="[{rate_limit: {requests: 1}}, {scopes: {scopes: [a]}}]",
        auth="required",
    )
    (tmp_path / "routes.yaml").write_text(text)
    config = load_routes(tmp_path / "routes.yaml")
    domain = config.domains[0]
    chain = effective_policies(domain, domain.versions[0], domain.versions[0].routes[0])
    assert [ref.name for ref, _ in chain] == ["cors", "rate_limit", "auth", "scopes"]
    assert chain[1][0].settings.requests == 1 and chain[1][1] == "shop:v1:/**"
    assert chain[0][1] == "shop"


def test_cors_origins_are_read_as_a_browser_serialises_them(tmp_path: Path):
    origins = "[https://App.Example:443, HTTP://*.Shop.Example:80, http://x.example:8080]"
    (tmp_path / "routes.yaml").write_text(
        routes(domain_policies=f"[{{cors: {{allow_origins: {origins}}}}}]")
    )
    (cors,) = load_routes(tmp_path / "routes.yaml").domains[0].policies
    assert cors.settings.allow_origins == (
        "https://app.example",
        "http://*.shop.example",
        "http://x.example:8080",
    )


@pytest.mark.parametrize(
    ("rule", "field", "target"),
    [
        ("{rename: {x-foo: x-auth_user}}", "request.rename", "x-auth_user"),
        ("{add: {x-auth-user: service-account}}", "request.add", "x-auth-user"),
        ("{rename: {x-foo: X_AUTH_USER}}", "request.rename", "x_auth_user"),
    ],
)
def test_check_refuses_header_rules_writing_an_ext_authz_identity_header(
    tmp_path: Path, rule: str, field: str, target: str
):
    """No ``auth:`` section: the identity comes from a remote ext-authz server's
    ``identity_headers``, and a rule after it may not write them in any spelling either."""
    auth = "{auth: {ext_authz: {grpc_service: '127.0.0.1:1', identity_headers: [x-auth-user]}}}"
    text = routes(route_policies=f"[{auth}, {{headers: {{request: {rule}}}}}]", auth="required")
    (tmp_path / "routes.yaml").write_text(text)
    result = run(["check", str(tmp_path / "routes.yaml")])
    assert result.returncode == 1
    assert (
        f"{tmp_path / 'routes.yaml'}:13: route shop v1 /**: header rules may not write the "
        f"identity header {target!r} ({field}; only auth sets it)"
    ) in result.stderr
