"""Reads ``auth.revocation`` into :class:`RevocationSettings`, with file:line errors.

Every key is documented in docs/configuration.md ("Revocation").
"""

from __future__ import annotations

import re

import yaml

from authz.revocation_urls import BUS_SCHEMES, STORE_SCHEMES, url_problem
from authz.settings import RevocationCacheSettings, RevocationSettings
from authz.yamlnodes import Node

__all__ = ["REVOCATION_KEYS", "parse_revocation"]

REVOCATION_KEYS = (
    "store",
    "bus",
    "key_prefix",
    "cache",
    "epoch_check_interval_seconds",
    "store_timeout_seconds",
    "on_store_error",
    "circuit_breaker",
    "subject_ttl_seconds",
    "admin_scope",
    "readiness",
    "bus_heartbeat_seconds",
    "reconnect",
)
_CACHE_KEYS = ("enabled", "max_entries", "ttl_seconds")
_BREAKER_KEYS = ("failures", "reset_seconds")
_RECONNECT_KEYS = ("initial_seconds", "max_seconds")
# Safe inside a Redis hash tag, a channel name and an AMQP exchange name.
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,99}\Z")
_SCOPE = re.compile(r"^[!#-\[\]-~]+\Z")


def parse_revocation(node: Node | None) -> RevocationSettings | None:
    """None when the section is absent: tokens are then valid until they expire."""
    if node is None:
        return None
    section = node.mapping(REVOCATION_KEYS)
    defaults = RevocationSettings()

    def url(key: str, schemes: tuple[str, ...], default: str) -> str:
        value_node = section.get(key)
        if value_node is None:
            return default
        value = value_node.str()
        problem = url_problem(value, schemes)
        if problem:
            raise value_node.error(f"{key}: {problem}")
        return value

    def seconds(key: str, default: float, minimum: float, maximum: float) -> float:
        value = section.get(key)
        return default if value is None else value.float(minimum=minimum, maximum=maximum)

    store = url("store", STORE_SCHEMES, defaults.store)
    bus = url("bus", BUS_SCHEMES, defaults.bus)
    if store.startswith("memory:") != bus.startswith("memory:"):
        where = section.get("store") or section.get("bus") or node
        raise where.error(
            "store and bus must both be memory:// or both be shared (redis/amqp): a memory "
            "store is private to one process, so a shared bus would announce revocations "
            "nobody else can read"
        )

    key_prefix = defaults.key_prefix
    if (n := section.get("key_prefix")) is not None:
        key_prefix = n.str()
        if not _PREFIX.match(key_prefix):
            raise n.error(
                "key_prefix must be 1-100 letters, digits or ':._-', "
                "starting with a letter or digit"
            )

    on_store_error = defaults.on_store_error
    if (n := section.get("on_store_error")) is not None:
        on_store_error = "deny" if n.choice(("deny", "allow")) == "deny" else "allow"

    admin_scope = defaults.admin_scope
    if (n := section.get("admin_scope")) is not None:
        admin_scope = n.str()
        if not _SCOPE.match(admin_scope):
            raise n.error("admin_scope must be one OAuth scope token (no spaces or quotes)")

    readiness = defaults.readiness
    if (n := section.get("readiness")) is not None:
        items = n.items() if isinstance(n.raw, yaml.SequenceNode) else [n]
        readiness = tuple(
            "store" if item.choice(("store", "bus")) == "store" else "bus" for item in items
        )

    breaker_failures, breaker_reset = defaults.breaker_failures, defaults.breaker_reset
    if (n := section.get("circuit_breaker")) is not None:
        breaker = n.mapping(_BREAKER_KEYS)
        if (v := breaker.get("failures")) is not None:
            breaker_failures = v.int(minimum=1, maximum=1000)
        if (v := breaker.get("reset_seconds")) is not None:
            breaker_reset = v.float(minimum=0.1, maximum=600)

    reconnect_initial, reconnect_max = defaults.reconnect_initial, defaults.reconnect_max
    if (n := section.get("reconnect")) is not None:
        reconnect = n.mapping(_RECONNECT_KEYS)
        if (v := reconnect.get("initial_seconds")) is not None:
            reconnect_initial = v.float(minimum=0.01, maximum=60)
        if (v := reconnect.get("max_seconds")) is not None:
            reconnect_max = v.float(minimum=0.01, maximum=600)
        if reconnect_initial > reconnect_max:
            raise n.error("reconnect.initial_seconds must not exceed reconnect.max_seconds")

    return RevocationSettings(
        store=store,
        bus=bus,
        key_prefix=key_prefix,
        cache=_cache(section.get("cache")),
        epoch_check_interval=seconds(
            "epoch_check_interval_seconds", defaults.epoch_check_interval, 0.05, 60
        ),
        store_timeout=seconds("store_timeout_seconds", defaults.store_timeout, 0.01, 10),
        on_store_error=on_store_error,
        breaker_failures=breaker_failures,
        breaker_reset=breaker_reset,
        subject_ttl=seconds("subject_ttl_seconds", defaults.subject_ttl, 60, 86_400 * 400),
        admin_scope=admin_scope,
        readiness=readiness,
        bus_heartbeat=seconds("bus_heartbeat_seconds", defaults.bus_heartbeat, 1, 60),
        reconnect_initial=reconnect_initial,
        reconnect_max=reconnect_max,
    )


def _cache(node: Node | None) -> RevocationCacheSettings:
    defaults = RevocationCacheSettings()
    if node is None:
        return defaults
    cache = node.mapping(_CACHE_KEYS)
    enabled, size, ttl = defaults.enabled, defaults.max_entries, defaults.ttl
    if (n := cache.get("enabled")) is not None:
        enabled = n.bool()
    if (n := cache.get("max_entries")) is not None:
        size = n.int(minimum=1, maximum=10_000_000)
    if (n := cache.get("ttl_seconds")) is not None:
        ttl = n.float(minimum=0.1, maximum=86_400)
    return RevocationCacheSettings(enabled=enabled, max_entries=size, ttl=ttl)
