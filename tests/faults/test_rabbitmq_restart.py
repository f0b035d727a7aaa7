"""The RabbitMQ node killed (SIGKILL) and restarted while two authz instances take checks.

tests/revocation/test_outages.py closes the broker's connections; here the whole node dies and
comes back: revoked tokens stay denied throughout, a revocation made during the outage is
enforced (the store is read while the bus is down), both instances resubscribe, propagation over
the bus resumes (the epoch check is set to 30 s so only the bus can deliver it in time), and the
instance's memory, descriptors and threads do not grow over two outages.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Record
from tests.faults.measure import fds, rss_mb
from tests.revocation.conftest import redis_url
from tests.revocation.helpers import admin_token, revocation_yaml, wait_for, write_routes
from tests.revocation.test_outages import Hammer, metric, start_authz
from tests.revocation.test_propagation import _claims, _revoke
from tests.support.services import PrivateRabbit, unique_prefix
from tests.support.tokens import SigningKey

__all__ = ["redis_url"]

pytestmark = pytest.mark.faults

KEY = SigningKey()


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("Threads:")).split()[1])


def test_rabbitmq_killed_and_restarted_twice(tmp_path, redis_url: str, record: Record):
    rabbit = PrivateRabbit().start()
    servers = []
    try:
        routes = write_routes(
            tmp_path,
            KEY,
            revocation_yaml(
                redis_url,
                rabbit.url,
                unique_prefix("faults-amqp"),
                epoch_check_interval_seconds=30,
                bus_heartbeat_seconds=1,
                # While the bus is down every check reads Redis: on a starved 2-core machine a
                # read can pass the 0.25 s default and fail closed (503), which is not this fault.
                store_timeout_seconds=1,
                readiness="[store]",
            ),
        )
        server, checker = start_authz(routes)
        other, _ = start_authz(routes)
        servers += [server, other]
        admin, target = admin_token(KEY), str(other.listening["admin"])
        good, revoked = KEY.token(sub="carol"), KEY.token(sub="dave")
        jti, exp = _claims(revoked)
        _revoke(target, admin, jti=jti, exp=exp)
        wait_for(lambda: checker.check(revoked) == (401, "token_revoked"), 5)
        pid = server.process.pid
        hammer = Hammer(checker, good, revoked)
        time.sleep(2)
        baseline = (rss_mb(pid), fds(pid), _threads(pid))
        outages = []
        try:
            for _ in range(2):
                rabbit.kill()
                lost = wait_for(
                    lambda: metric(server, "doma_authz_revocation_bus_connected") == 0.0, 15
                )
                # Revoked during the outage (written to Redis, the event is lost): the instance
                # reads the store while its bus is down.
                late = KEY.token(sub="erin")
                assert checker.check(late) == (200, "ok")
                late_jti, late_exp = _claims(late)
                _revoke(target, admin, jti=late_jti, exp=late_exp)
                during = wait_for(lambda t=late: checker.check(t) == (401, "token_revoked"), 3)
                started = time.monotonic()
                rabbit.start()
                booted = time.monotonic() - started
                reconnect = wait_for(
                    lambda: (
                        metric(server, "doma_authz_revocation_bus_connected") == 1.0
                        and metric(other, "doma_authz_revocation_bus_connected") == 1.0
                    ),
                    30,
                )
                # Propagation resumes: a token this instance has cached as good is revoked
                # through the other one; only a bus event can reach it before the epoch check.
                fresh = KEY.token(sub="frank")
                assert checker.check(fresh) == (200, "ok")
                assert checker.check(fresh) == (200, "ok")
                fresh_jti, fresh_exp = _claims(fresh)
                _revoke(target, admin, jti=fresh_jti, exp=fresh_exp)
                propagated = wait_for(
                    lambda t=fresh: checker.check(t) == (401, "token_revoked"), 5, interval=0.002
                )
                outages.append((lost, during, booted, reconnect, propagated))
        finally:
            hammer.stop()
        time.sleep(1)
        after = (rss_mb(pid), fds(pid), _threads(pid))
        assert server.process.poll() is None and other.process.poll() is None
        record(
            checks=hammer.count,
            wrong_answers=len(hammer.wrong),
            outage_seen_s=[round(o[0], 2) for o in outages],
            revoked_during_outage_denied_after_s=[round(o[1], 3) for o in outages],
            broker_boot_s=[round(o[2], 1) for o in outages],
            resubscribed_after_boot_s=[round(o[3], 2) for o in outages],
            propagation_after_reconnect_ms=[round(o[4] * 1000, 1) for o in outages],
            rss_mb=[round(baseline[0], 1), round(after[0], 1)],
            fds=[baseline[1], after[1]],
            threads=[baseline[2], after[2]],
        )
        assert hammer.wrong == [], hammer.wrong[:5]
        assert hammer.count > 200
        for lost, during, _, reconnect, propagated in outages:
            assert lost < 10
            assert during < 1.0
            assert reconnect < 15
            assert propagated < 1.0
        assert after[0] - baseline[0] < 15
        assert after[1] <= baseline[1] + 4
        assert after[2] <= baseline[2] + 2
    finally:
        for server in servers:
            server.stop()
        rabbit.close()
    for server in servers:
        assert "Traceback" not in server.stderr(), server.stderr()[-3000:]
