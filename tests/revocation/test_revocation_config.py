"""``auth.revocation`` parsing: defaults, every key, errors at the right line; URL forms."""

from __future__ import annotations

import pytest

from authz.errors import ConfigError
from authz.loader import load_auth_settings
from authz.revocation_urls import parse_redis_url, redact, url_problem
from authz.settings import RevocationCacheSettings, RevocationSettings
from tests.revocation.helpers import write_routes
from tests.support.tokens import SigningKey

KEY = SigningKey()


def load(tmp_path, revocation: str):  # type: ignore[no-untyped-def]
    return load_auth_settings(write_routes(tmp_path, KEY, revocation))


def test_without_the_section_there_is_no_revocation(tmp_path):
    routes = write_routes(tmp_path, KEY, "")
    routes.write_text(routes.read_text().replace("  revocation:\n", ""))
    assert load_auth_settings(routes).revocation is None


def test_an_empty_section_means_the_in_memory_defaults(tmp_path):
    assert load(tmp_path, "    {}").revocation == RevocationSettings()


def test_every_key(tmp_path):
    settings = load(
        tmp_path,
        """\
    store: redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2/mymaster/2
    bus: amqps://user:pw@mq.example:5671/prod
    key_prefix: eco2:revocation
    cache: {enabled: false, max_entries: 5000, ttl_seconds: 10}
    epoch_check_interval_seconds: 0.5
    store_timeout_seconds: 0.1
    on_store_error: allow
    circuit_breaker: {failures: 5, reset_seconds: 3}
    subject_ttl_seconds: 7200
    admin_scope: ops.revoke
    readiness: [store, bus]
    bus_heartbeat_seconds: 3
    reconnect: {initial_seconds: 0.2, max_seconds: 10}""",
    ).revocation
    assert settings == RevocationSettings(
        store="redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2/mymaster/2",
        bus="amqps://user:pw@mq.example:5671/prod",
        key_prefix="eco2:revocation",
        cache=RevocationCacheSettings(enabled=False, max_entries=5000, ttl=10.0),
        epoch_check_interval=0.5,
        store_timeout=0.1,
        on_store_error="allow",
        breaker_failures=5,
        breaker_reset=3.0,
        subject_ttl=7200.0,
        admin_scope="ops.revoke",
        readiness=("store", "bus"),
        bus_heartbeat=3.0,
        reconnect_initial=0.2,
        reconnect_max=10.0,
    )


@pytest.mark.parametrize(
    ("yaml", "line", "message"),
    [
        ("    stor: redis://x", 9, "unknown key 'stor'; did you mean 'store'?"),
        ("    store: http://x", 9, "store: expected a URL starting with one of"),
        ("    store: redis://r:6379\n    bus: kafka://k", 10, "bus: expected a URL"),
        ("    store: redis+sentinel://h:1", 9, "needs /SERVICE"),
        ("    store: redis+cluster://h:1/0", 9, "takes no path"),
        ("    store: redis+cluster://h:99999", 9, "bad port"),
        ("    store: redis://u:secret@h:99999/0", 9, "bad port"),
        ("    store: rediss://h:0", 9, "bad port"),
        ("    store: redis://r:6379\n    bus: amqp://u:secret@h:70000/", 10, "bad port"),
        ("    store: redis://r:6379\n    bus: amqp://h:port/", 10, "bad port"),
        ("    store: redis://r\n    bus: memory://", 9, "both be memory://"),
        ("    on_store_error: maybe", 9, "'maybe' is not one of: deny, allow"),
        ("    key_prefix: 'has space'", 9, "key_prefix must be"),
        ("    epoch_check_interval_seconds: 0", 9, "must be at least 0.05"),
        ("    cache: {ttl_seconds: soon}", 9, "expected a number"),
        ("    cache: {size: 3}", 9, "unknown key 'size'"),
        ("    readiness: [store, cache]", 9, "'cache' is not one of: store, bus"),
        ("    reconnect: {initial_seconds: 5, max_seconds: 1}", 9, "must not exceed"),
        ("    admin_scope: 'a b'", 9, "one OAuth scope"),
    ],
)
def test_errors_point_at_the_line(tmp_path, yaml, line, message):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, yaml)
    assert error.value.line == line and message in error.value.message, str(error.value)
    assert "secret" not in str(error.value)


def test_url_forms():
    cluster = parse_redis_url("redis+cluster://u:p%40ss@a:7000,b:7001,[::1]:7002")
    assert cluster.kind == "cluster" and cluster.password == "p@ss" and cluster.username == "u"
    assert cluster.nodes == (("a", 7000), ("b", 7001), ("::1", 7002))
    sentinel = parse_redis_url("redis+sentinel://s1,s2:26380/mymaster/3")
    assert (sentinel.service, sentinel.db, sentinel.nodes) == (
        "mymaster",
        3,
        (("s1", 26379), ("s2", 26380)),
    )
    assert parse_redis_url("rediss://h:6380/1").tls
    assert url_problem("memory://demo", ("memory",)) is None
    assert url_problem("amqp:///", ("amqp",)) is not None


def test_passwords_never_reach_messages():
    assert redact("redis://:hunter2@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("amqp://guest:guest@h/") == "amqp://guest:***@h/"
    assert redact("redis://h:6379") == "redis://h:6379"


def test_check_prints_the_revocation_settings_without_passwords(tmp_path):
    from tests.support import processes

    routes = write_routes(
        tmp_path,
        KEY,
        "    store: redis://:hunter2@127.0.0.1:6379/0\n    bus: amqp://doma:s3cret@127.0.0.1:5672/",
    )
    done = processes.run(["check", str(routes)])
    assert done.returncode == 0, done.stderr
    assert (
        "revocation store=redis://:***@127.0.0.1:6379/0  bus=amqp://doma:***@127.0.0.1:5672/"
        in done.stdout
    )
    assert "hunter2" not in done.stdout and "s3cret" not in done.stdout


def test_revoke_before_accepts_unix_seconds_and_iso_8601():
    from doma_gateway.revoke_command import _time

    assert _time("1767225600") == 1767225600.0
    assert _time("2026-01-01T00:00:00Z") == 1767225600.0
    with pytest.raises(Exception, match="ISO 8601"):
        _time("yesterday")
