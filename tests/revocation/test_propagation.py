"""Three ``doma-gateway authz`` processes sharing Redis and a bus, one behind a real Envoy.

A token revoked through one instance's API must be denied by all three, and through Envoy; the
measured propagation time is printed (run with ``-s`` to see it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from urllib.request import urlopen

import pytest

from authz.revocation_client import RevocationClient
from doma_gateway.echo import EchoServer
from doma_gateway.envoy_bootstrap import EXT_AUTHZ_BOOTSTRAP, render, start_envoy, wait_ready
from tests.revocation.helpers import (
    Checker,
    admin_token,
    revocation_yaml,
    start_authz_process,
    wait_for,
    write_routes,
)
from tests.support import processes
from tests.support.http import send
from tests.support.services import free_port, unique_prefix
from tests.support.tokens import SigningKey

pytestmark = pytest.mark.e2e

KEY = SigningKey()


class Cluster:
    """Three authz processes and an Envoy in front of the first."""

    def __init__(self, tmp, store: str, bus: str):  # type: ignore[no-untyped-def]
        routes = write_routes(
            tmp,
            KEY,
            revocation_yaml(store, bus, unique_prefix("e2e"), epoch_check_interval_seconds=1),
        )
        self.servers: list[processes.ServerProcess] = []
        self.checkers: list[Checker] = []
        self.upstream = EchoServer().start()
        self.envoy = None
        try:
            for _ in range(3):
                server = start_authz_process(routes)
                self.servers.append(server)
                self.checkers.append(Checker(server.port("grpc")))
            for checker in self.checkers:
                checker.wait_serving()
            self.port, admin_port = free_port(), free_port()
            config = render(
                EXT_AUTHZ_BOOTSTRAP,
                listen_port=self.port,
                admin_port=admin_port,
                clusters={
                    "doma-authz": ("127.0.0.1", self.servers[0].port("grpc")),
                    "upstream": ("127.0.0.1", self.upstream.port),
                },
            )
            self.envoy = start_envoy(config, tmp)
            wait_ready(self.envoy, admin_port)
        except BaseException:
            self.close()
            raise

    def through_envoy(self, token: str) -> tuple[int, str]:
        reply = send(self.port, "/api/v1/scan/results", [("authorization", f"Bearer {token}")])
        return reply.status, reply.json().get("reason", "ok") if reply.status != 200 else "ok"

    def token_cache_lookups(self, index: int) -> dict[str, float]:
        """``doma_authz_token_cache_lookups_total`` of one instance, by result."""
        host, port = self.servers[index].address("metrics")
        with urlopen(f"http://{host}:{port}/metrics") as reply:
            text = reply.read().decode()
        prefix = "doma_authz_token_cache_lookups_total{result="
        return {
            line[len(prefix) + 1 : line.index('"}')]: float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(prefix)
        }

    def admin(self, index: int) -> str:
        return str(self.servers[index].listening["admin"])

    def close(self) -> None:
        if self.envoy is not None:
            self.envoy.terminate()
            self.envoy.wait(10)
        for checker in self.checkers:
            checker.close()
        for server in self.servers:
            server.stop()
        self.upstream.stop()
        for server in self.servers:
            assert "Traceback" not in server.stderr(), server.stderr()[-3000:]


@pytest.fixture(params=["amqp", "redis"])
def cluster(request, tmp_path, redis_url, amqp_url) -> Iterator[Cluster]:
    bus = amqp_url if request.param == "amqp" else redis_url
    cluster = Cluster(tmp_path, redis_url, bus)
    cluster.bus_kind = request.param  # type: ignore[attr-defined]
    yield cluster
    cluster.close()


def _revoke(target: str, admin: str, **kwargs: object) -> None:
    async def call() -> None:
        async with RevocationClient(target, admin) as client:
            if "jti" in kwargs:
                await client.revoke_token(str(kwargs["jti"]), int(kwargs["exp"]))  # type: ignore[call-overload]
            else:
                await client.revoke_subject(str(kwargs["subject"]))

    asyncio.run(call())


def _propagation(cluster: Cluster, token: str, revoke) -> list[float]:  # type: ignore[no-untyped-def]
    """Seconds from the revoke call until each instance (and Envoy) denies ``token``."""
    started = time.monotonic()
    revoke()
    waits = []
    for checker in cluster.checkers:
        wait_for(
            lambda c=checker: c.check(token) == (401, "token_revoked"), timeout=5, interval=0.002
        )
        waits.append(time.monotonic() - started)
    wait_for(
        lambda: cluster.through_envoy(token) == (401, "token_revoked"), timeout=5, interval=0.002
    )
    waits.append(time.monotonic() - started)
    return waits


def test_a_token_revoked_through_one_instance_is_denied_by_all_three_and_through_envoy(cluster):
    token = KEY.token(sub="alice")
    claims_jti, exp = _claims(token)
    admin = admin_token(KEY)
    # A new token through Envoy: its jti is unknown to the cache, so the check waits for the
    # store, yet the token is verified once: one token-cache miss and no hit.
    before = cluster.token_cache_lookups(0)
    assert cluster.through_envoy(token) == (200, "ok")
    after = cluster.token_cache_lookups(0)
    assert (after["miss"] - before["miss"], after["hit"] - before["hit"]) == (1, 0)
    # Warm every cache with the token as not revoked: the event, not a cache miss, must deny it.
    for _ in range(3):
        assert [c.check(token) for c in cluster.checkers] == [(200, "ok")] * 3
    assert cluster.through_envoy(token) == (200, "ok")

    waits = _propagation(
        cluster, token, lambda: _revoke(cluster.admin(1), admin, jti=claims_jti, exp=exp)
    )
    print(
        f"\n[{cluster.bus_kind}] jti revocation visible after (s): "  # type: ignore[attr-defined]
        + ", ".join(f"instance{i}={w:.4f}" for i, w in enumerate(waits[:3]))
        + f", envoy={waits[3]:.4f}"
    )
    assert max(waits) < 2.0

    other = KEY.token(sub="bob")
    assert [c.check(other) for c in cluster.checkers] == [(200, "ok")] * 3
    waits = _propagation(cluster, other, lambda: _revoke(cluster.admin(2), admin, subject="bob"))
    print(
        f"[{cluster.bus_kind}] subject revocation visible after (s): "  # type: ignore[attr-defined]
        + ", ".join(f"{w:.4f}" for w in waits)
    )
    # A token of the same subject issued after the logout passes.
    time.sleep(1.1)
    fresh = KEY.token(sub="bob")
    assert [c.check(fresh) for c in cluster.checkers] == [(200, "ok")] * 3


def _claims(token: str) -> tuple[str, int]:
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    return claims["jti"], claims["exp"]
