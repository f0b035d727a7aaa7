"""Through a real Envoy: ext_authz (fail closed) in front of an echo upstream.

Envoy runs the bootstraps from config/envoy/ with only their ports rewritten: ext-authz.yaml
(gRPC, transport V3) and ext-authz-http.yaml (the HTTP protocol). Both ask one authz process and
must decide every recorded case the same way.
"""

import json
import signal
import socket
import time

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from doma_gateway.echo import EchoServer
from doma_gateway.envoy_bootstrap import (
    EXT_AUTHZ_BOOTSTRAP,
    EXT_AUTHZ_HTTP_BOOTSTRAP,
    render,
    set_check_protocol,
    start_envoy,
    wait_ready,
)
from tests.support import processes
from tests.support.cases import case_ids, load_cases
from tests.support.http import send
from tests.support.jwks_server import JwksServer
from tests.support.services import refused_port
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks

pytestmark = pytest.mark.e2e

KEY = SigningKey()
CASES = load_cases(KEY)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def routes_for(jwks_url: str, refetch: float = 0.2) -> str:
    return f"""\
auth:
  issuers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      jwks_url: {jwks_url}
      jwks_cache:
        refetch_min_interval_seconds: {refetch}
        min_ttl_seconds: 1
        timeout_seconds: 1
  claims_to_headers:
    sub: x-user-id
    email: x-user-email
  bypass:
    - /api/v1/auth/kakao/callback
    - /api/v1/auth/.well-known/jwks.json
    - /api/v1/*/health
"""


def wait_serving(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.05)
    raise TimeoutError("authz never became SERVING")


class Edge:
    """Envoy + authz + echo upstream, wired from the shipped bootstrap."""

    def __init__(
        self,
        tmp,
        authz_port: int,
        upstream: EchoServer,
        bootstrap=EXT_AUTHZ_BOOTSTRAP,
        check_protocol: str | None = None,
    ):
        self.port, self.admin_port = free_port(), free_port()
        config = render(
            bootstrap,
            listen_port=self.port,
            admin_port=self.admin_port,
            clusters={
                "doma-authz": ("127.0.0.1", authz_port),
                "upstream": ("127.0.0.1", upstream.port),
            },
        )
        if check_protocol is not None:
            set_check_protocol(config, check_protocol)
        self.envoy = start_envoy(config, tmp)
        wait_ready(self.envoy, self.admin_port)

    def stats(self) -> dict[str, int]:
        from urllib.request import urlopen

        with urlopen(f"http://127.0.0.1:{self.admin_port}/stats?filter=ext_authz") as reply:
            lines = reply.read().decode().splitlines()
        return {
            name: int(value)
            for name, _, value in (line.partition(": ") for line in lines)
            if value.isdigit()
        }

    def close(self) -> None:
        self.envoy.terminate()
        self.envoy.wait(10)


@pytest.fixture(scope="module")
def jwks_server():
    server = JwksServer(jwks(KEY))
    yield server
    server.close()


@pytest.fixture(scope="module")
def upstream():
    server = EchoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def authz(tmp_path_factory, jwks_server):
    tmp = tmp_path_factory.mktemp("authz")
    (tmp / "routes.yaml").write_text(routes_for(jwks_server.url))
    server = processes.start(
        [
            "authz",
            "--routes",
            str(tmp / "routes.yaml"),
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ]
    )
    wait_serving(server.port("grpc"))
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["grpc", "http1", "http2"])
def edge(request, tmp_path_factory, authz, upstream):
    # One authz process: its HTTP check port serves HTTP/1.1 and HTTP/2 alike.
    grpc = request.param == "grpc"
    edge = Edge(
        tmp_path_factory.mktemp("envoy"),
        authz.port("grpc" if grpc else "http"),
        upstream,
        EXT_AUTHZ_BOOTSTRAP if grpc else EXT_AUTHZ_HTTP_BOOTSTRAP,
        None if grpc else request.param,
    )
    edge.transport = request.param
    yield edge
    edge.close()


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_recorded_case_through_envoy(edge, case):
    headers = [(name, value) for name, values in case.headers.items() for value in values]
    reply = send(edge.port, case.path, headers, method=case.method)
    expect = case.envoy
    assert reply.status == expect["status"], reply.body
    if expect["status"] == 200:
        seen = reply.json()
        for name, value in expect.get("upstream", {}).items():
            assert seen["headers"].get(name, "").encode("latin-1") == value.encode()
        for name in expect.get("upstream_absent", []):
            assert name not in seen["headers"]
        if "upstream_path" in expect:
            assert seen["path"] == expect["upstream_path"]
        # Bypassed requests never reach the upstream with an identity header.
        if expect.get("reason") == "bypass":
            assert "x-user-id" not in seen["headers"]
    elif "reason" in expect:
        assert reply.json()["reason"] == expect["reason"]
        assert reply.headers["content-type"] == "application/json"
        if expect["status"] == 401:
            assert 'error="invalid_token"' in reply.headers["www-authenticate"]
        for value in case.headers.get("authorization", []):
            assert value.partition(" ")[2][:24].encode() not in reply.body


def test_no_spelling_of_an_identity_header_reaches_the_upstream_but_the_one_set(edge):
    token = load_cases(KEY)[0].headers["authorization"][0]
    spoofed = [(name, "admin") for name in ("x_user_id", "x-user_id", "x_user-id", "X-User_Id")]
    reply = send(edge.port, "/api/v1/scan/results", [("authorization", token), *spoofed])
    assert reply.status == 200
    seen = reply.json()["headers"]
    assert [name for name in seen if name.replace("_", "-") == "x-user-id"] == ["x-user-id"]
    assert seen["x-user-id"] == "alice"
    bypassed = send(edge.port, "/api/v1/scan/health", spoofed)
    assert not [n for n in bypassed.json()["headers"] if n.replace("_", "-") == "x-user-id"]


def test_a_token_with_a_deeply_nested_claim_is_allowed_alike_by_both_protocols(edge):
    deep: object = "leaf"
    for _ in range(60):
        deep = {"a": deep}
    before = edge.stats().get("http.edge.ext_authz.error", 0)
    reply = send(
        edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {KEY.token(profile=deep)}")]
    )
    assert reply.status == 200, reply.body
    assert reply.json()["headers"]["x-user-id"] == "user-1"
    assert edge.stats().get("http.edge.ext_authz.error", 0) == before


def test_ext_authz_denials_are_decisions_not_errors(edge):
    before = edge.stats()
    send(edge.port, "/api/v1/scan/results")
    after = edge.stats()
    assert after["http.edge.ext_authz.denied"] == before.get("http.edge.ext_authz.denied", 0) + 1
    assert after.get("http.edge.ext_authz.error", 0) == before.get("http.edge.ext_authz.error", 0)


def test_jwks_rotation_is_picked_up_without_restart(edge, jwks_server):
    rotated = SigningKey()
    token = rotated.token(sub="rotated-user")
    reply = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}")])
    assert (reply.status, reply.json()["reason"]) == (401, "unknown_key")
    jwks_server.document = jwks(KEY, rotated)
    time.sleep(0.3)  # the unknown kid waits out refetch_min_interval (0.2 s here)
    reply = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}")])
    assert reply.status == 200
    assert reply.json()["headers"]["x-user-id"] == "rotated-user"


def test_a_garbage_jwks_is_one_failed_refresh_and_the_next_good_one_is_learnt(edge, jwks_server):
    before = jwks_server.document
    rotated = SigningKey()
    token = rotated.token(sub="after-garbage")
    try:
        # A key whose kty is a list: no key at all. The refresh it asks for fails; the keys
        # in use stay, and checks go on.
        jwks_server.document = b'{"keys": [{"kty": ["RSA"], "kid": "x"}]}'
        time.sleep(0.3)
        reply = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}")])
        assert (reply.status, reply.json()["reason"]) == (401, "unknown_key")
        good = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {KEY.token()}")])
        assert good.status == 200
        jwks_server.document = jwks(KEY, rotated)
        time.sleep(0.3)
        reply = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}")])
        assert reply.status == 200, reply.body
    finally:
        jwks_server.document = before


def test_a_refetch_slower_than_envoys_deadline_still_learns_the_rotated_key(edge, jwks_server):
    before = jwks_server.document
    rotated = SigningKey()
    token = rotated.token(sub="slow-rotation")
    try:
        jwks_server.document = jwks(KEY, rotated)
        jwks_server.delay = 0.8  # Envoy gives a check 0.5 s
        time.sleep(0.3)
        first = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}")])
        assert first.status != 200
        # The fetch the first check started outlives it, and the next check finds the key
        # (a fetch of its own would be as slow, and miss Envoy's deadline again).
        time.sleep(1.0)
        reply = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}")])
        assert reply.status == 200, reply.body
    finally:
        jwks_server.delay = 0.0
        jwks_server.document = before


@pytest.mark.parametrize("how", ["pulled", "renamed"])
def test_a_key_pulled_from_the_jwks_takes_its_cached_verifications_with_it(edge, jwks_server, how):
    pulled = SigningKey()
    token = pulled.token(sub="soon-unpublished", exp=int(time.time()) + 3600)
    before = jwks_server.document
    jwks_server.document = jwks(KEY, pulled)
    try:
        time.sleep(0.3)  # the unknown kid waits out refetch_min_interval (0.2 s here)
        for _ in range(2):  # verified, then answered from the token cache
            reply = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}")])
            assert reply.status == 200
    finally:
        # Pulled, or published again under another kid: the token's kid no longer names it, so
        # a new verification would not find it, and a cached one must not either.
        keys = json.loads(before)["keys"]
        if how == "renamed":
            keys.append({**pulled.jwk, "kid": "renamed"})
        jwks_server.document = json.dumps({"keys": keys}).encode()
    # Any refresh publishes the set without that key: here one that an unknown kid asks for.
    time.sleep(0.3)
    unknown = SigningKey().token()
    send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {unknown}")])
    reply = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}")])
    assert (reply.status, reply.json()["reason"]) == (401, "unknown_key")
    # Tokens of the keys still published are unaffected.
    still = send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {KEY.token()}")])
    assert still.status == 200
    jwks_server.document = before


def test_envoy_speaks_the_protocol_the_bootstrap_names(edge, authz):
    from urllib.request import urlopen

    label = {"grpc": "grpc", "http1": "http", "http2": "http2"}[edge.transport]
    series = (
        f'doma_authz_checks_total{{reason="missing_token",result="denied",transport="{label}"}}'
    )

    def count() -> float:
        host, port = authz.address("metrics")
        with urlopen(f"http://{host}:{port}/metrics") as reply:
            lines = reply.read().decode().splitlines()
        return sum(float(line.split()[-1]) for line in lines if line.startswith(series))

    before = count()
    for _ in range(3):
        assert send(edge.port, "/api/v1/scan/results").status == 401
    assert count() == before + 3


def test_metrics_count_checks_by_reason_and_token_cache_hits(edge, authz):
    token = load_cases(KEY)[0].headers["authorization"][0]
    for _ in range(3):
        send(edge.port, "/api/v1/scan/results", [("authorization", token)])
    from urllib.request import urlopen

    host, port = authz.address("metrics")
    with urlopen(f"http://{host}:{port}/metrics") as reply:
        text = reply.read().decode()
    assert 'doma_authz_checks_total{reason="ok",result="allowed",transport="grpc"}' in text
    assert (
        'doma_authz_checks_total{reason="missing_token",result="denied",transport="grpc"}' in text
    )
    hits = next(
        line
        for line in text.splitlines()
        if line.startswith('doma_authz_token_cache_lookups_total{result="hit"}')
    )
    assert float(hits.split()[-1]) >= 2
    assert "doma_authz_jwks_age_seconds" in text
    assert token.partition(" ")[2] not in text


def test_envoy_fails_closed_when_authz_is_unreachable(tmp_path, upstream):
    with refused_port() as dead_port:
        edge = Edge(tmp_path, dead_port, upstream)
        try:
            reply = send(edge.port, "/api/v1/scan/results", [("authorization", "Bearer a.b.c")])
            assert reply.status == 503
            reply = send(edge.port, "/api/v1/scan/health")
            assert reply.status == 503  # even a bypass path: Envoy cannot know it without us
        finally:
            edge.close()


def test_health_is_not_serving_until_keys_load(tmp_path):
    keys = JwksServer(jwks(KEY))
    keys.status = 503
    (tmp_path / "routes.yaml").write_text(routes_for(keys.url))
    server = processes.start(
        [
            "authz",
            "--routes",
            str(tmp_path / "routes.yaml"),
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
        ]
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port('grpc')}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            time.sleep(0.5)
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        keys.status = 200
        wait_serving(server.port("grpc"), timeout=10)
    finally:
        server.stop()
        keys.close()


def test_sigterm_drains_in_flight_checks_and_exits_within_the_grace_period(tmp_path):
    keys = JwksServer(jwks(KEY))
    (tmp_path / "routes.yaml").write_text(routes_for(keys.url, refetch=0.0))
    server = processes.start(
        [
            "authz",
            "--routes",
            str(tmp_path / "routes.yaml"),
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--grace",
            "3",
        ]
    )
    try:
        wait_serving(server.port("grpc"))
        # An unknown kid makes the check wait on a slow JWKS fetch: it is in flight at SIGTERM.
        keys.delay = 1.0
        request = check_request(SigningKey().token())
        with grpc.insecure_channel(f"127.0.0.1:{server.port('grpc')}") as channel:
            check = external_auth_pb2_grpc.AuthorizationStub(channel).Check.future(
                request, timeout=5
            )
            time.sleep(0.3)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            reply = check.result()
            assert json.loads(reply.denied_response.body)["reason"] == "unknown_key"
        assert server.process.wait(10) == 0
        assert time.monotonic() - started < 4
        assert server.wait_event("stopped", timeout=2)["event"] == "stopped"
    finally:
        server.stop()
        keys.close()
    assert "Traceback" not in server.stderr()


def check_request(token: str):
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/api/v1/scan/results"
    http.headers["authorization"] = f"Bearer {token}"
    return request


def test_logs_never_echo_a_token(authz, edge):
    token = KEY.token(sub="log-check")
    send(edge.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}x")])
    time.sleep(0.2)
    assert token not in authz.stderr()
    assert json.dumps(token) not in authz.stderr()
