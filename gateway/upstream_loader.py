"""Reads one ``upstreams:`` entry: endpoints, balancing, timeouts, retries, breaker, outliers."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import yaml

from authz.yamlnodes import Mapping, Node
from gateway.routes_model import (
    IDEMPOTENT_METHODS,
    Backoff,
    CircuitBreakerSettings,
    OutlierDetection,
    RetryPolicy,
    Timeouts,
    Upstream,
)

__all__ = ["parse_methods", "parse_upstream", "seconds"]

_METHOD = re.compile(r"^[A-Z]+\Z")
_UPSTREAM_KEYS = (
    "endpoints",
    "load_balancing",
    "max_connections",
    "max_requests",
    "preserve_host",
    "timeouts",
    "retries",
    "circuit_breaker",
    "outlier_detection",
)
_TIMEOUT_KEYS = ("connect_seconds", "read_seconds", "total_seconds")
_RETRY_KEYS = ("attempts", "methods", "retry_on", "backoff", "budget")
_BACKOFF_KEYS = ("base_seconds", "max_seconds")
_BUDGET_KEYS = ("ratio", "min_concurrency")
_BREAKER_KEYS = ("failures", "reset_seconds", "on_status")
_OUTLIER_KEYS = ("consecutive_failures", "ejection_seconds", "max_ejected_percent")
_RETRY_CONDITIONS = ("connect_failure", "timeout")


def seconds(mapping: Mapping, key: str, default: float, *, minimum: float = 0.001) -> float:
    node = mapping.get(key)
    return default if node is None else node.float(minimum=minimum, maximum=86_400)


def parse_methods(node: Node) -> frozenset[str]:
    items = node.items() if isinstance(node.raw, yaml.SequenceNode) else [node]
    methods = set()
    for item in items:
        method = item.str()
        if not _METHOD.match(method):
            raise item.error(f"{method!r} is not an HTTP method (upper-case, e.g. GET, POST)")
        methods.add(method)
    if not methods:
        raise node.error("at least one method is required (omit 'methods' to allow any)")
    return frozenset(methods)


def _statuses(node: Node) -> frozenset[int]:
    return frozenset(item.int(minimum=100, maximum=599) for item in node.items())


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)\Z")


def _endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be connected to as written, or None."""
    usage = "must be http(s)://HOST[:PORT] without a path (use a route's 'rewrite' to change paths)"
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return "has a port outside 1-65535"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return usage
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return usage
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@)"
    if port == 0:
        return "has a port outside 1-65535"
    if not _HOST.match(parts.netloc.rpartition(":")[0] if port else parts.netloc):
        return f"has an invalid host {parts.netloc!r}"
    return None


def parse_upstream(name: str, key: Node, node: Node) -> Upstream:
    upstream = node.mapping(_UPSTREAM_KEYS)
    endpoints_node = upstream.require("endpoints")
    endpoints = endpoints_node.str_list()
    if not endpoints:
        raise endpoints_node.error("at least one endpoint is required")
    items = (
        endpoints_node.items()
        if isinstance(endpoints_node.raw, yaml.SequenceNode)
        else [endpoints_node]
    )
    for item, endpoint in zip(items, endpoints, strict=True):
        problem = _endpoint_problem(endpoint)
        if problem is not None:
            raise item.error(f"endpoint {endpoint!r} {problem}")
    defaults = Upstream(name, endpoints)
    balancing = defaults.load_balancing
    if (n := upstream.get("load_balancing")) is not None:
        balancing = n.choice(("round_robin", "least_outstanding"))  # type: ignore[assignment]
    max_connections = defaults.max_connections
    if (n := upstream.get("max_connections")) is not None:
        max_connections = n.int(minimum=1, maximum=100_000)
    max_requests = defaults.max_requests
    if (n := upstream.get("max_requests")) is not None:
        max_requests = n.int(minimum=1, maximum=1_000_000)
    preserve_host = upstream.get("preserve_host")
    timeouts = Timeouts()
    if (n := upstream.get("timeouts")) is not None:
        t = n.mapping(_TIMEOUT_KEYS)
        timeouts = Timeouts(
            connect=seconds(t, "connect_seconds", timeouts.connect),
            read=seconds(t, "read_seconds", timeouts.read),
            total=seconds(t, "total_seconds", timeouts.total),
        )
        if timeouts.total < timeouts.connect:
            raise n.error("total_seconds must be at least connect_seconds")
    return Upstream(
        name=name,
        endpoints=tuple(e.rstrip("/") for e in endpoints),
        load_balancing=balancing,
        timeouts=timeouts,
        retries=_retries(upstream.get("retries")),
        circuit_breaker=_breaker(upstream, "circuit_breaker"),
        outlier_detection=_outlier(upstream, "outlier_detection"),
        max_connections=max_connections,
        max_requests=max_requests,
        preserve_host=preserve_host.bool() if preserve_host is not None else False,
        source=key.where,
    )


def _retries(node: Node | None) -> RetryPolicy:
    if node is None:
        return RetryPolicy()
    retry = node.mapping(_RETRY_KEYS)
    defaults = RetryPolicy()
    attempts = retry.get("attempts")
    methods = retry.get("methods")
    on_status, on_connect, on_timeout = defaults.on_status, defaults.on_connect_failure, False
    if (on := retry.get("retry_on")) is not None:
        statuses, on_connect = set(), False
        for item in on.items():
            if item.raw.tag.endswith(":int"):
                statuses.add(item.int(minimum=500, maximum=599))
            else:
                condition = item.choice((*_RETRY_CONDITIONS, "5xx"))
                on_connect = on_connect or condition == "connect_failure"
                on_timeout = on_timeout or condition == "timeout"
                if condition == "5xx":
                    statuses.update(range(500, 600))
        on_status = frozenset(statuses)
    backoff = Backoff()
    if (n := retry.get("backoff")) is not None:
        b = n.mapping(_BACKOFF_KEYS)
        backoff = Backoff(
            seconds(b, "base_seconds", backoff.base), seconds(b, "max_seconds", backoff.max)
        )
        if backoff.max < backoff.base:
            raise n.error("max_seconds must be at least base_seconds")
    ratio, min_concurrency = defaults.budget_ratio, defaults.budget_min_concurrency
    if (n := retry.get("budget")) is not None:
        budget = n.mapping(_BUDGET_KEYS)
        if (r := budget.get("ratio")) is not None:
            ratio = r.float(minimum=0.0, maximum=1.0)
        if (m := budget.get("min_concurrency")) is not None:
            min_concurrency = m.int(minimum=0, maximum=10_000)
    return RetryPolicy(
        attempts=attempts.int(minimum=0, maximum=10) if attempts is not None else 0,
        methods=parse_methods(methods) if methods is not None else IDEMPOTENT_METHODS,
        on_status=on_status,
        on_connect_failure=on_connect,
        on_timeout=on_timeout,
        backoff=backoff,
        budget_ratio=ratio,
        budget_min_concurrency=min_concurrency,
    )


def _enabled(parent: Mapping, key: str) -> Node | None:
    """The settings node, or None when the feature is turned off with ``key: false``."""
    node = parent.get(key)
    if node is None:
        return parent.node if key not in parent else None
    if isinstance(node.raw, yaml.ScalarNode):
        if node.bool():
            raise node.error(f"{key}: expected settings or false (true alone says nothing)")
        return None
    return node


def _breaker(parent: Mapping, key: str) -> CircuitBreakerSettings | None:
    if key not in parent:
        return CircuitBreakerSettings()
    node = _enabled(parent, key)
    if node is None:
        return None
    b = node.mapping(_BREAKER_KEYS)
    defaults = CircuitBreakerSettings()
    failures = b.get("failures")
    on_status = b.get("on_status")
    return CircuitBreakerSettings(
        failures=failures.int(minimum=1, maximum=10_000)
        if failures is not None
        else defaults.failures,
        reset_seconds=seconds(b, "reset_seconds", defaults.reset_seconds),
        on_status=_statuses(on_status) if on_status is not None else defaults.on_status,
    )


def _outlier(parent: Mapping, key: str) -> OutlierDetection | None:
    if key not in parent:
        return OutlierDetection()
    node = _enabled(parent, key)
    if node is None:
        return None
    o = node.mapping(_OUTLIER_KEYS)
    defaults = OutlierDetection()
    failures = o.get("consecutive_failures")
    percent = o.get("max_ejected_percent")
    return OutlierDetection(
        consecutive_failures=failures.int(minimum=1, maximum=10_000)
        if failures is not None
        else defaults.consecutive_failures,
        ejection_seconds=seconds(o, "ejection_seconds", defaults.ejection_seconds),
        max_ejected_percent=percent.int(minimum=0, maximum=100)
        if percent is not None
        else defaults.max_ejected_percent,
    )
