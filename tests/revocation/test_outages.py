"""Outages, with private Redis and RabbitMQ servers this test starts and breaks.

- RabbitMQ connections closed (twice) while checks run: the revoked token stays denied, the good
  one stays allowed, the instance resubscribes and answers from its cache again.
- Redis stopped: 503 ``revocation_store_unavailable`` at once, readiness NOT_SERVING; Redis
  started again: checks pass again and readiness returns, with no restart.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.revocation.helpers import (
    Checker,
    admin_token,
    revocation_yaml,
    start_authz_process,
    wait_for,
    write_routes,
)
from tests.revocation.test_propagation import _claims, _revoke
from tests.support import processes
from tests.support.services import PrivateRabbit, PrivateRedis, unique_prefix
from tests.support.tokens import SigningKey

pytestmark = pytest.mark.e2e

KEY = SigningKey()


def metric(server: processes.ServerProcess, name: str) -> float:
    with urllib.request.urlopen(
        f"http://{server.listening['metrics']}/metrics", timeout=5
    ) as reply:
        text = reply.read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not exported"
    return float(match.group(1))


def bus_losses(server: processes.ServerProcess) -> float:
    """Cache flushes caused by a lost bus: a counter, so a loss is seen even if the instance
    reconnected before anyone looked at the connected gauge."""
    with urllib.request.urlopen(
        f"http://{server.listening['metrics']}/metrics", timeout=5
    ) as reply:
        text = reply.read().decode()
    match = re.search(
        r'^doma_authz_revocation_cache_flushes_total\{cause="bus_lost"\} (\S+)$', text, re.MULTILINE
    )
    return float(match.group(1)) if match else 0.0


def start_authz(routes) -> tuple[processes.ServerProcess, Checker]:  # type: ignore[no-untyped-def]
    server = start_authz_process(routes)
    checker = Checker(server.port("grpc"))
    checker.wait_serving()
    return server, checker


class Hammer:
    """Checks both tokens without pause on a thread, recording every unexpected answer."""

    def __init__(self, checker: Checker, good: str, revoked: str):
        self.checker, self.good, self.revoked = checker, good, revoked
        self.count = 0
        self.wrong: list[tuple[str, tuple[int, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            revoked = self.checker.check(self.revoked)
            if revoked != (401, "token_revoked"):
                self.wrong.append(("revoked", revoked))
            good = self.checker.check(self.good)
            if good != (200, "ok"):
                self.wrong.append(("good", good))
            self.count += 2

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_rabbitmq_connections_killed_while_checks_run(tmp_path, redis_url):
    rabbit = PrivateRabbit().start()
    servers: list[processes.ServerProcess] = []
    try:
        routes = write_routes(
            tmp_path,
            KEY,
            revocation_yaml(
                redis_url,
                rabbit.url,
                unique_prefix("amqp-kill"),
                epoch_check_interval_seconds=0.5,
                bus_heartbeat_seconds=1,
            ),
        )
        server, checker = start_authz(routes)
        other, _ = start_authz(routes)
        servers += [server, other]
        admin = admin_token(KEY)
        good, revoked = KEY.token(sub="carol"), KEY.token(sub="dave")
        jti, exp = _claims(revoked)
        _revoke(str(other.listening["admin"]), admin, jti=jti, exp=exp)
        wait_for(lambda: checker.check(revoked) == (401, "token_revoked"), 5)
        assert metric(server, "doma_authz_revocation_bus_connected") == 1.0

        hammer = Hammer(checker, good, revoked)
        try:
            for outage in ("close_all_connections", "close_all_connections", "stop_app"):
                # Connections closed by the broker, then the broker application stopped for a
                # while (reconnect attempts fail and back off) and started again.
                losses = bus_losses(server)
                if outage == "stop_app":
                    rabbit.ctl("stop_app")
                else:
                    rabbit.close_all_connections()
                wait_for(lambda n=losses: bus_losses(server) > n, 15)
                # Revoked through the other instance while this one has no bus: the store read
                # (cache bypassed while disconnected) or the epoch check must catch it.
                late = KEY.token(sub="erin")
                assert checker.check(late) == (200, "ok")
                late_jti, late_exp = _claims(late)
                _revoke(str(other.listening["admin"]), admin, jti=late_jti, exp=late_exp)
                took = wait_for(lambda t=late: checker.check(t) == (401, "token_revoked"), 3)
                print(f"\n{outage}: revoked during the bus outage, denied after {took:.3f}s")
                if outage == "stop_app":
                    time.sleep(2)  # a few failed reconnects
                    rabbit.ctl("start_app")
                reconnect = wait_for(
                    lambda: metric(server, "doma_authz_revocation_bus_connected") == 1.0, 15
                )
                print(f"resubscribed {reconnect:.2f}s after the outage was seen")
        finally:
            hammer.stop()
        assert hammer.wrong == [], hammer.wrong[:5]
        assert hammer.count > 100
        # Back on the bus, the cache answers again: hits grow while the store is not read.
        hits = metric(server, 'doma_authz_revocation_cache_lookups_total{result="hit"}')
        for _ in range(20):
            checker.check(good)
        assert (
            metric(server, 'doma_authz_revocation_cache_lookups_total{result="hit"}') >= hits + 20
        )
        assert metric(server, 'doma_authz_revocation_cache_flushes_total{cause="bus_lost"}') >= 3
    finally:
        for server in servers:
            server.stop()
        rabbit.close()
    for server in servers:
        assert "Traceback" not in server.stderr(), server.stderr()[-3000:]


def store_routes(tmp_path: Path, store: str, bus: str, name: str, *, epoch_check: float) -> Path:
    """Routes trusting KEY whose revocation uses ``store`` and ``bus`` under a fresh prefix."""
    return write_routes(
        tmp_path,
        KEY,
        revocation_yaml(store, bus, unique_prefix(name), epoch_check_interval_seconds=epoch_check),
    )


def test_redis_stopped_gives_503_at_once_and_recovers_without_restart(tmp_path, amqp_url):
    redis = PrivateRedis().start()
    server = None
    try:
        routes = store_routes(tmp_path, redis.url, amqp_url, "redis-stop", epoch_check=0.5)
        server, checker = start_authz(routes)
        token = KEY.token(sub="frank")
        assert checker.check(token) == (200, "ok")

        redis.stop()
        # Within one epoch interval the cache is no longer trusted; from then on every check
        # answers 503 without waiting on Redis.
        wait_for(lambda: checker.check(token) == (503, "revocation_store_unavailable"), 3)
        timings = []
        for _ in range(50):
            started = time.perf_counter()
            assert checker.check(token) == (503, "revocation_store_unavailable")
            timings.append(time.perf_counter() - started)
        timings.sort()
        print(
            f"\n503 while Redis is down: p50 {timings[25] * 1000:.2f} ms, "
            f"max {timings[-1] * 1000:.2f} ms"
        )
        assert timings[-1] < 0.2
        wait_for(lambda: not checker.serving(), 3)

        redis.start()
        took = wait_for(lambda: checker.check(token) == (200, "ok"), 10, interval=0.05)
        print(f"checks pass again {took:.2f}s after Redis restarted")
        wait_for(checker.serving, 5)
        assert metric(server, "doma_authz_revocation_store_errors_total") >= 50
        assert metric(server, 'doma_authz_revocation_store_breaker_state{state="closed"}') == 1.0
    finally:
        if server is not None:
            server.stop()
            assert "Traceback" not in server.stderr(), server.stderr()[-3000:]
        redis.close()


def test_events_lost_on_a_silently_dead_bus_are_caught_by_the_epoch_check(tmp_path, redis_url):
    """The bus (a Redis of its own) is frozen, not closed: no error, no event. A revocation
    written to the store must still be enforced within the epoch-check interval."""
    import asyncio

    import pybreaker

    from authz.revocation_redis import RedisStore, redis_client

    bus = PrivateRedis().start()
    prefix = unique_prefix("silent")
    server = None
    try:
        routes = write_routes(
            tmp_path,
            KEY,
            revocation_yaml(
                redis_url,
                bus.url,
                prefix,
                epoch_check_interval_seconds=0.5,
                bus_heartbeat_seconds=30,
            ),
        )
        server, checker = start_authz(routes)
        token = KEY.token(sub="grace")
        assert checker.check(token) == (200, "ok")
        assert checker.check(token) == (200, "ok")  # now answered from the cache
        bus.freeze()
        jti, exp = _claims(token)

        async def revoke_without_event() -> None:
            store = RedisStore(
                redis_client(redis_url, 1.0),
                key_prefix=prefix,
                timeout=1.0,
                breaker=pybreaker.CircuitBreaker(),
            )
            await store.revoke_token(jti, exp + 30)
            await store.close()

        asyncio.run(revoke_without_event())
        took = wait_for(lambda: checker.check(token) == (401, "token_revoked"), 3, interval=0.005)
        print(f"\nrevocation with its event lost enforced after {took:.3f}s (interval 0.5 s)")
        assert took < 1.0
        assert metric(server, "doma_authz_revocation_bus_connected") == 1.0  # it never noticed
        assert (
            metric(server, 'doma_authz_revocation_cache_flushes_total{cause="epoch_changed"}') >= 2
        )
    finally:
        bus.thaw()
        if server is not None:
            server.stop()
        bus.close()
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]


def test_a_store_restarted_without_its_data_revokes_at_once_again(tmp_path, amqp_url):
    """A Redis that kept nothing numbers its revocations from 1 again: an instance that heard
    epochs 1 to 3 before must not take the new epoch 1 for one it has already applied."""
    redis = PrivateRedis().start()
    servers: list[processes.ServerProcess] = []
    try:
        # Epoch checks far apart: only the bus's event can revoke within the test's bound.
        routes = store_routes(tmp_path, redis.url, amqp_url, "store-reset", epoch_check=20)
        server, checker = start_authz(routes)
        other, other_checker = start_authz(routes)
        servers += [server, other]
        admin = admin_token(KEY)
        for index in range(3):
            jti, exp = _claims(KEY.token(sub=f"earlier-{index}"))
            _revoke(str(other.listening["admin"]), admin, jti=jti, exp=exp)
        redis.stop()
        redis.start()
        victim = KEY.token(sub="victim")
        for instance in (checker, other_checker):
            wait_for(lambda c=instance: c.check(victim) == (200, "ok"), 10, interval=0.05)
        jti, exp = _claims(victim)
        _revoke(str(other.listening["admin"]), admin, jti=jti, exp=exp)
        for instance in (checker, other_checker):
            took = wait_for(lambda c=instance: c.check(victim) == (401, "token_revoked"), 3)
            print(f"\nrevoked after the store restarted: denied after {took:.3f}s")
    finally:
        for server in servers:
            server.stop()
            assert "Traceback" not in server.stderr(), server.stderr()[-3000:]
        redis.close()
