"""The shipped example extensions, alone and in a real gateway: a safety veto and a promo tag."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from doma_gateway.echo import EchoServer
from examples import promo_tag, safety_check
from gateway.extensions import Call
from tests.support import processes
from tests.support.http import send


def call(point: str = "pre_upstream", **fields: Any) -> Call:
    defaults: dict[str, Any] = {"method": "POST", "path": "/api/v1/rides/x", "headers": {}}
    defaults.update(fields)
    return Call(point, **defaults)


async def test_safety_check_holds_a_blocked_driver_and_passes_the_others():
    check = safety_check.create({"blocked_drivers": ["d-17"]})
    held = await check(call(headers={"x-driver-id": "d-17"}))
    assert held is not None and (held.status, held.reason) == (403, "safety_hold")
    assert await check(call(headers={"x-driver-id": "d-18"})) is None
    # A verified token's subject is the driver, whatever the header claims.
    assert await check(call(headers={"x-driver-id": "d-18"}, claims={"sub": "d-17"})) is not None
    unknown = await check(call())
    assert unknown is not None and (unknown.status, unknown.reason) == (400, "driver_unidentified")


@pytest.mark.parametrize(
    "settings", [{"blocked_drivers": "d-17"}, {"blocked": ["d-17"]}], ids=["not a list", "typo"]
)
def test_safety_check_refuses_wrong_settings(settings):
    with pytest.raises(ValueError):
        safety_check.create(settings)


async def test_promo_tag_tags_requests_and_responses_of_its_domains():
    tag = promo_tag.create({"tag": "spring", "domains": ["rides"]})
    added = await tag(call(domain="rides"))
    assert added is not None and added.headers == (("x-promo-tag", "spring"),)
    assert await tag(call(domain="maps")) is None
    # The service's own tag wins on the response.
    own = call("post_response", domain="rides", status=200, response_headers={"x-promo-tag": "x"})
    assert await tag(own) is None
    with pytest.raises(ValueError):
        promo_tag.create({})


def routes(echo: int, canary: int) -> str:
    return f"""\
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
          - {{name: go-online, path: /drivers/*/online, methods: [POST]}}
          - {{name: trips, path: /trips/**}}
upstreams:
  rides-api: {{endpoints: ["http://127.0.0.1:{echo}"]}}
  canary: {{endpoints: ["http://127.0.0.1:{canary}"]}}
extensions:
  points:
    rides.go_online: {{routes: [go-online], on_error: fail_closed}}
  registered:
    - name: block-probes
      factory: tests.support.extensions:recorder
      points: [pre_route]
      settings: {{deny: probe_refused, status: 404, when_header: x-probe}}
    - name: canary
      factory: tests.support.extensions:recorder
      points: [pre_upstream]
      settings: {{route_to: canary, when_header: x-canary}}
    - name: safety
      factory: examples.safety_check:create
      points: [rides.go_online]
      timeout_seconds: 0.05
      settings: {{blocked_drivers: [d-17]}}
    - name: promo
      factory: examples.promo_tag:create
      points: [pre_upstream, post_response]
      settings: {{tag: spring-2026}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[tuple[processes.ServerProcess, int]]:
    echo, canary = EchoServer().start(), EchoServer().start()
    path = tmp_path_factory.mktemp("routes") / "routes.yaml"
    path.write_text(routes(echo.port, canary.port))
    server = processes.start(
        ["serve", "--routes", str(path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    )
    yield server, canary.port
    server.stop()
    echo.stop()
    canary.stop()


def request(server: processes.ServerProcess, path: str, *headers: tuple[str, str]) -> Any:
    reply = send(server.port("http"), path, list(headers), method="POST")
    return reply.status, reply.headers, json.loads(reply.body)


def test_a_safe_driver_goes_online_with_the_promo_tag_both_ways(gateway):
    server, _ = gateway
    status, headers, seen = request(
        server, "/api/v1/rides/drivers/d-18/online", ("x-driver-id", "d-18")
    )
    assert status == 200
    assert seen["headers"]["x-promo-tag"] == "spring-2026"
    assert headers["x-promo-tag"] == "spring-2026"


def test_the_safety_check_keeps_a_blocked_driver_offline(gateway):
    server, _ = gateway
    status, _, body = request(server, "/api/v1/rides/drivers/d-17/online", ("x-driver-id", "d-17"))
    assert (status, body["reason"], body["extension"]) == (403, "safety_hold", "safety")
    assert body["request_id"]


def test_a_domain_point_runs_only_on_its_routes(gateway):
    server, _ = gateway
    status, _, _ = request(server, "/api/v1/rides/trips/1", ("x-driver-id", "d-17"))
    assert status == 200


def test_pre_route_vetoes_before_routing(gateway):
    server, _ = gateway
    status, _, body = request(server, "/api/v1/nowhere/at/all", ("x-probe", "1"))
    assert (status, body["reason"], body["extension"]) == (404, "probe_refused", "block-probes")


def test_an_extension_can_rewrite_the_upstream_choice(gateway):
    server, canary = gateway
    _, _, seen = request(server, "/api/v1/rides/trips/1", ("x-canary", "1"))
    assert seen["headers"]["host"] == f"127.0.0.1:{canary}"
    _, _, seen = request(server, "/api/v1/rides/trips/1")
    assert seen["headers"]["host"] != f"127.0.0.1:{canary}"


def test_extension_metrics_are_exported(gateway):
    server, _ = gateway
    request(server, "/api/v1/rides/drivers/d-17/online", ("x-driver-id", "d-17"))
    text = send(server.port("admin"), "/metrics").body.decode()
    assert (
        'doma_gateway_extension_calls_total{extension="safety",outcome="deny",'
        'point="rides.go_online"}'
    ) in text
    assert 'doma_gateway_extension_duration_seconds_count{extension="promo"' in text


def test_check_accepts_an_upstream_only_an_extension_routes_to(tmp_path, capsys):
    from doma_gateway.cli import main

    (tmp_path / "routes.yaml").write_text(routes(1, 2))
    assert main(["check", str(tmp_path / "routes.yaml")]) == 0
    said = capsys.readouterr().out
    assert "note: " in said and "upstream 'canary' is not used by any route" in said
    assert "only an extension's route_to can reach it" in said
    # Without an extension that could route to it, the same upstream is an error.
    text = routes(1, 2)
    text = text[: text.index("extensions:")]
    (tmp_path / "routes.yaml").write_text(text)
    assert main(["check", str(tmp_path / "routes.yaml")]) == 1
