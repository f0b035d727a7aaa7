"""Extension points in process: order, veto, headers, upstream choice, timeouts, errors, config."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from authz.errors import ConfigError
from gateway.extensions import Call, Outcome, add_headers, deny
from gateway.extensions.claims import ReadOnlyClaims
from gateway.extensions.host import ExtensionHost
from gateway.extensions.loader import load_extensions
from gateway.extensions.metrics import ExtensionMetrics
from gateway.routes_loader import load_routes
from tests.support import extensions as fakes

ROUTES = """\
layers: [infrastructure, product]
domains:
  rides:
    layer: product
    owner: team-rides
    auth: bypass
    upstream: rides-api
    versions:
      v1:
        routes:
          - {name: go-online, path: /drivers/*/online, methods: [POST]}
          - {name: trips, path: /trips/**}
  maps:
    layer: infrastructure
    owner: team-maps
    auth: bypass
    upstream: rides-api
    versions:
      v1:
        routes:
          - {name: tiles, path: /tiles/**}
upstreams:
  rides-api: {endpoints: ["http://rides.local:8000"]}
  canary: {endpoints: ["http://canary.local:8000"]}
"""


@pytest.fixture(autouse=True)
def fresh_calls():
    fakes.CALLS.clear()


class Loaded:
    def __init__(self, host: ExtensionHost, registry: CollectorRegistry):
        self.host = host
        self.registry = registry

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def run(self, point: str, **fields: object) -> object:
        plan = self.host.plan(point)
        assert plan is not None
        call = Call(point, "GET", "/api/v1/rides/trips/1", {"x-in": "1"}, **fields)  # type: ignore[arg-type]
        return await self.host.run(plan, call)


def load(tmp_path: Path, extensions: str) -> Loaded:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES + "extensions:\n" + textwrap.indent(textwrap.dedent(extensions), "  "))
    registry = CollectorRegistry()
    host = load_extensions(path, load_routes(path), ExtensionMetrics(registry))
    assert host is not None
    return Loaded(host, registry)


def entry(
    name: str, points: str = "[pre_upstream]", timeout: float = 0.5, **settings: object
) -> str:
    body = ", ".join(f"{k}: {v}" for k, v in {"name": name, **settings}.items())
    return (
        f"- name: {name}\n  factory: tests.support.extensions:recorder\n"
        f"  points: {points}\n  timeout_seconds: {timeout}\n  settings: {{{body}}}\n"
    )


def registered(*entries: str) -> str:
    return "registered:\n" + textwrap.indent("".join(entries), "  ")


def inline(name: str, source: str) -> str:
    return registered(f"- {{name: {name}, {source}, points: [pre_route]}}\n")


async def test_extensions_run_in_registration_order_and_see_earlier_headers(tmp_path):
    loaded = load(
        tmp_path,
        "registered:\n"
        + textwrap.indent(entry("a", header="x-a") + entry("b", header="x-b") + entry("c"), "  "),
    )
    verdict = await loaded.run("pre_upstream")
    assert [name for name, _, _ in fakes.CALLS] == ["a", "b", "c"]
    assert "x-a" in fakes.CALLS[1][2] and "x-b" in fakes.CALLS[2][2]
    assert verdict.denial is None and verdict.headers == (("x-a", "a"), ("x-b", "b"))
    assert (
        loaded.metric(
            "doma_gateway_extension_calls_total",
            extension="b",
            point="pre_upstream",
            outcome="continue",
        )
        == 1
    )


async def test_any_deny_stops_the_point(tmp_path):
    loaded = load(
        tmp_path,
        "registered:\n"
        + textwrap.indent(entry("a") + entry("b", deny="safety_hold") + entry("c"), "  "),
    )
    verdict = await loaded.run("pre_upstream")
    assert [name for name, _, _ in fakes.CALLS] == ["a", "b"]
    assert (verdict.denial.status, verdict.denial.reason, verdict.extension) == (
        403,
        "safety_hold",
        "b",
    )


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        ({"sleep": 0.2}, "timeout"),
        ({"raise": "true"}, "exception"),
        ({"garbage": "true"}, "invalid_outcome"),
    ],
)
@pytest.mark.parametrize("on_error", ["fail_open", "fail_closed"])
async def test_a_failing_extension_fails_open_or_closed_as_its_point_says(
    tmp_path, settings, kind, on_error
):
    loaded = load(
        tmp_path,
        f"points:\n  pre_upstream: {{on_error: {on_error}}}\nregistered:\n"
        + textwrap.indent(
            entry("slow", timeout=0.02, **settings) + entry("after", header="x-after"), "  "
        ),
    )
    verdict = await loaded.run("pre_upstream")
    if on_error == "fail_closed":
        assert (verdict.denial.status, verdict.denial.reason) == (503, "extension_failed")
        assert [name for name, _, _ in fakes.CALLS] == ["slow"]
    else:
        assert verdict.denial is None and verdict.headers == (("x-after", "after"),)
    assert (
        loaded.metric(
            "doma_gateway_extension_errors_total", extension="slow", point="pre_upstream", kind=kind
        )
        == 1
    )
    assert (
        loaded.metric(
            "doma_gateway_extension_duration_seconds_count", extension="slow", point="pre_upstream"
        )
        == 1
    )


async def test_post_response_fails_open_by_default(tmp_path):
    loaded = load(tmp_path, registered(entry("p", "[post_response]", **{"raise": "true"})))
    verdict = await loaded.run("post_response", status=200)
    assert verdict.denial is None
    assert fakes.CALLS[0][:2] == ("p", "post_response")


async def test_an_extension_may_choose_another_known_upstream_only(tmp_path):
    loaded = load(
        tmp_path,
        registered(
            entry("to-canary", route_to="canary"),
            entry("to-nowhere", "[pre_route]", route_to="nowhere"),
        ),
    )
    assert (await loaded.run("pre_upstream")).upstream == "canary"
    failed = await loaded.run("pre_route")
    assert failed.denial is not None and failed.denial.reason == "extension_failed"


def test_domain_points_apply_to_their_domain_and_listed_routes(tmp_path):
    loaded = load(
        tmp_path,
        "points:\n  rides.go_online: {routes: [go-online]}\nregistered:\n"
        + textwrap.indent(entry("safety", "[rides.go_online]"), "  "),
    )
    assert [p.name for p in loaded.host.request_plans("rides", "go-online")] == ["rides.go_online"]
    assert loaded.host.request_plans("rides", "trips") == ()
    assert loaded.host.request_plans("maps", "tiles") == ()


FAKES = "tests.support.extensions"
# ROUTES ends at line 24: 'extensions:' is line 25, the section's first line 26.
CONFIG_ERRORS = [
    ("unknown point", registered(entry("a", "[pre_flight]")), 29, "unknown extension point"),
    ("undeclared", registered(entry("a", "[rides.pre_ride]")), 29, "is not declared"),
    ("unknown domain", "points:\n  billing.pre_pay: {}\nregistered: []\n", 27, "no domain"),
    (
        "unknown route",
        "points:\n  rides.go_online: {routes: [nope]}\nregistered: []\n",
        27,
        "rides has no route 'nope'",
    ),
    ("import", inline("a", "factory: 'nowhere.module:create'"), 27, "cannot import"),
    ("missing", inline("a", f"factory: '{FAKES}:missing'"), 27, "is not a callable factory"),
    (
        "bad factory",
        inline("a", f"factory: '{FAKES}:not_a_factory_result'"),
        27,
        "returned a non-callable",
    ),
    ("entry point", inline("a", "entry_point: nope"), 27, "no entry point 'nope'"),
    ("name ending in a newline", inline('"a\\n"', f"factory: '{FAKES}:recorder'"), 27, "valid"),
    (
        "factory ending in a newline",
        inline("a", f'factory: "{FAKES}:recorder\\n"'),
        27,
        "must be module:callable",
    ),
    (
        "point ending in a newline",
        'points:\n  "rides.go_online\\n": {}\nregistered: []\n',
        27,
        "is neither a built-in point",
    ),
    ("duplicate", registered(entry("a"), entry("a")), 32, "'a' is already registered"),
    # Settings follow the file's rules: plain types only, no duplicate key.
    ("settings tag", registered(entry("a", tag="!secret foo")), 31, "cannot carry the tag"),
    (
        "settings python tag",
        registered(
            f"- name: a\n  factory: {FAKES}:recorder\n  points: [pre_route]\n"
            "  settings:\n    run: !!python/name:os.system ''\n"
        ),
        31,
        "cannot carry the tag",
    ),
    (
        "settings duplicate key",
        registered(
            f"- name: a\n  factory: {FAKES}:recorder\n  points: [pre_route]\n"
            "  settings:\n    tag: first\n    tag: second\n"
        ),
        32,
        "duplicate key 'tag'",
    ),
]


@pytest.mark.parametrize(
    ("extensions", "line", "message"),
    [case[1:] for case in CONFIG_ERRORS],
    ids=[case[0] for case in CONFIG_ERRORS],
)
def test_extension_config_errors_name_their_line(tmp_path, extensions, line, message):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, extensions)
    assert message in caught.value.message
    assert caught.value.line == line, str(caught.value)


def test_an_installed_entry_point_loads_when_the_config_names_it(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "promo_tag_ext-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: promo-tag-ext\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[doma_gateway.extensions]\npromo-tag = examples.promo_tag:create\n"
    )
    monkeypatch.syspath_prepend(str(site))
    loaded = load(
        tmp_path,
        "registered:\n  - {name: promo, entry_point: promo-tag, points: [pre_upstream], "
        "settings: {tag: spring}}\n",
    )
    step = loaded.host.plan("pre_upstream").steps[0]
    assert type(step.extension).__name__ == "PromoTag"


@pytest.mark.parametrize(
    "value",
    ["a\r\nx-injected: yes", "a\nb", "a\rb", "a\x00b", "a\x1bb", "a\x7fb", "€"],
    ids=["crlf", "lf", "cr", "nul", "escape", "del", "not-latin-1"],
)
def test_an_outcome_refuses_a_value_that_is_not_one_header_line(value: str):
    with pytest.raises(ValueError, match="one header line"):
        add_headers(x_tag=value)


@pytest.mark.parametrize("name", ["x-evil\n", "host\n", "content-length\n", "x-\nevil"])
def test_an_outcome_refuses_a_header_name_holding_a_newline(name: str):
    with pytest.raises(ValueError, match="not a lower-case header name"):
        Outcome(headers=((name, "v"),))


@pytest.mark.parametrize(
    "name",
    ["keep-alive", "proxy-connection", "proxy-authenticate", "transfer-encoding", "x-request-id"],
)
def test_an_outcome_refuses_headers_the_gateway_owns(name: str):
    with pytest.raises(ValueError, match="an extension cannot set it"):
        Outcome(headers=((name, "v"),))


def test_a_denial_reason_ending_in_a_newline_is_refused():
    with pytest.raises(ValueError, match="snake_case"):
        deny("held\n")


def test_an_outcome_keeps_htab_and_latin_1_values():
    assert add_headers(x_tag="a\tb é").headers == (("x-tag", "a\tb é"),)


def test_settings_aliases_are_shared_not_copied(tmp_path):
    # Nine levels of ten aliases each: a billion values if each alias were copied.
    levels = ["  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"] + [
        f"  l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n" for n in range(1, 9)
    ]
    extension = (
        f"- name: a\n  factory: {FAKES}:recorder\n  points: [pre_upstream]\n  settings:\n"
        + textwrap.indent("".join(levels), "  ")
    )
    loaded = load(tmp_path, registered(extension))
    (plan,) = loaded.host.request_plans("rides", "trips")
    settings = plan.steps[0].extension.settings
    assert settings["l8"][0] is settings["l7"] and settings["l0"][0] == "x"


def test_read_only_claims_refuse_writes_at_every_depth():
    claims = {"scope": "a", "realm": {"roles": ["rider"]}, "aud": ["api", {"x": 1}]}
    view = ReadOnlyClaims().view(claims)
    assert view is not None and view["realm"]["roles"] == ("rider",)
    with pytest.raises(TypeError):
        view["scope"] = "admin"  # type: ignore[index]
    with pytest.raises(TypeError):
        view["realm"]["roles"] = ["admin"]
    with pytest.raises(AttributeError):
        view["realm"]["roles"].append("admin")
    with pytest.raises(TypeError):
        view["aud"][1]["x"] = 2
    assert claims == {"scope": "a", "realm": {"roles": ["rider"]}, "aud": ["api", {"x": 1}]}


async def test_cancelling_the_request_cancels_its_extension_and_is_not_swallowed(tmp_path):
    loaded = load(tmp_path, registered(entry("slow", timeout=5, sleep=5)))
    running = asyncio.create_task(loaded.run("pre_upstream"))
    await asyncio.sleep(0.05)
    assert fakes.CALLS, "the extension is running"
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    (abandoned,) = loaded.host._abandoned
    with pytest.raises(asyncio.CancelledError):
        await abandoned


BROKEN = {
    "syntax": ("def create(settings)\n    return None\n", "create", "SyntaxError"),
    "import": ("raise RuntimeError('module init failed')\n", "create", "RuntimeError"),
    "factory": (
        "def create(settings):\n    raise RuntimeError('cannot reach the feature store')\n",
        "create",
        "its factory raised RuntimeError: cannot reach the feature store",
    ),
    "synchronous": (
        "def create(settings):\n    def hook(call):\n        return None\n    return hook\n",
        "create",
        "returned a synchronous callable",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_extension_code_is_a_config_error_at_the_entry(tmp_path, monkeypatch, capsys, case):
    from doma_gateway.cli import main

    source, attribute, message = BROKEN[case]
    module = f"broken_extension_{case}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    extension = f"- name: a\n  points: [pre_route]\n  factory: {module}:{attribute}\n"
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, registered(extension))
    assert message in caught.value.message and caught.value.line == 29, str(caught.value)
    # check says the same, with the place, and no traceback.
    monkeypatch.delitem(sys.modules, module, raising=False)
    assert main(["check", str(tmp_path / "routes.yaml")]) == 1
    said = capsys.readouterr()
    assert "routes.yaml:29:" in said.err and message in said.err, said.err
    assert "Traceback" not in said.err + said.out
