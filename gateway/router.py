"""Route matching: ``/api/{version}/{domain}/...`` to a domain version's first matching route.

The version comes from the path, else from ``Accept-Version`` / ``API-Version``, else the
domain's default. Routes are checked in order; the first whose path and method match wins
(Envoy: "checked in order"). A path that matches only with another method gives a *partial*
match, answered 405 with ``Allow`` when no route matches fully (Starlette's ``Match``).
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from authz.bypass import compile_glob
from gateway.errors import MethodNotAllowed, RouteNotFound, VersionGone, VersionNotFound
from gateway.routes_loader import VERSION_NAME
from gateway.routes_model import Domain, Route, RoutesConfig, Version

__all__ = ["Match", "RouteMatch", "Router", "version_headers"]

_API = "/api/"


class Match(enum.Enum):
    NONE = 0
    PARTIAL = 1
    FULL = 2


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: Route
    regex: re.Pattern[str]
    methods: frozenset[str] | None

    def matches(self, method: str, rest: str) -> Match:
        if self.regex.fullmatch(rest) is None and not (rest == "/" and self.regex.fullmatch("")):
            # The domain root ("/api/v1/scan" or ".../scan/") is zero segments: '/**' takes it.
            return Match.NONE
        if self.methods is None or method in self.methods:
            return Match.FULL
        return Match.PARTIAL


@dataclass(frozen=True, slots=True)
class VersionTable:
    domain: Domain
    version: Version
    routes: tuple[CompiledRoute, ...]
    headers: tuple[tuple[bytes, bytes], ...]
    sunset_at: float | None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    domain: Domain
    version: Version
    route: Route
    # The normalized path as matched, and the path the upstream receives (after any rewrite).
    path: str
    upstream_path: str
    response_headers: tuple[tuple[bytes, bytes], ...]


def version_headers(version: Version) -> tuple[tuple[bytes, bytes], ...]:
    """``Deprecation`` (RFC 9745), ``Sunset`` (RFC 8594) and ``Link`` for a version."""
    headers: list[tuple[bytes, bytes]] = []
    if version.deprecated is not None:
        headers.append((b"deprecation", f"@{int(version.deprecated.timestamp())}".encode()))
    if version.sunset is not None:
        headers.append((b"sunset", _http_date(version.sunset).encode()))
    if version.link is not None and (version.deprecated is not None or version.sunset is not None):
        relations = [
            r for r, on in (("deprecation", version.deprecated), ("sunset", version.sunset)) if on
        ]
        links = ", ".join(f'<{version.link}>; rel="{rel}"; type="text/html"' for rel in relations)
        headers.append((b"link", links.encode()))
    return tuple(headers)


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _compile(route: Route) -> CompiledRoute:
    methods = route.methods
    if methods is not None and "GET" in methods:
        # HEAD is GET without a body (RFC 9110 9.3.2); a GET route answers it too.
        methods = methods | {"HEAD"}
    return CompiledRoute(route, re.compile(compile_glob(route.path)), methods)


class Router:
    def __init__(self, config: RoutesConfig, *, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._tables: dict[str, dict[str, VersionTable]] = {}
        self._defaults: dict[str, str] = {}
        self._supported: dict[str, list[str]] = {}
        for domain in config.domains:
            tables = {}
            for version in domain.versions:
                tables[version.name] = VersionTable(
                    domain,
                    version,
                    tuple(_compile(route) for route in version.routes),
                    version_headers(version),
                    version.sunset.timestamp() if version.sunset else None,
                )
            self._tables[domain.name] = tables
            self._defaults[domain.name] = domain.default_version
            self._supported[domain.name] = [v.name for v in domain.versions]

    def match(self, method: str, path: str, header_version: str | None = None) -> RouteMatch:
        """The route for a normalized ``path``; raises a 404/405/410 :class:`GatewayError`."""
        if not path.startswith(_API):
            raise RouteNotFound("route_not_found")
        first, _, after = path[len(_API) :].partition("/")
        if VERSION_NAME.match(first):
            version_name = first
            domain_name, slash, rest = after.partition("/")
            prefix = f"{_API}{first}/{domain_name}"
        else:
            version_name = None
            domain_name, slash, rest = first, "/" if after or path.endswith("/") else "", after
            prefix = f"{_API}{domain_name}"
        tables = self._tables.get(domain_name)
        if tables is None:
            raise RouteNotFound("unknown_domain")
        if version_name is None:
            version_name = header_version or self._defaults[domain_name]
        table = tables.get(version_name)
        if table is None:
            raise VersionNotFound(
                "unknown_version", version=version_name, supported=self._supported[domain_name]
            )
        if table.sunset_at is not None and self._clock() >= table.sunset_at:
            raise VersionGone(
                "version_sunset", headers=_decoded(table.headers), version=version_name
            )
        rest = slash + rest if slash else "/"
        allowed: set[str] = set()
        for compiled in table.routes:
            outcome = compiled.matches(method, rest)
            if outcome is Match.FULL:
                return RouteMatch(
                    table.domain,
                    table.version,
                    compiled.route,
                    path,
                    _rewrite(compiled.route, path, prefix, rest),
                    table.headers,
                )
            if outcome is Match.PARTIAL and compiled.methods is not None:
                allowed.update(compiled.methods)
        if allowed:
            allow = ", ".join(sorted(allowed))
            raise MethodNotAllowed(
                "method_not_allowed", headers=(("allow", allow),), allow=sorted(allowed)
            )
        raise RouteNotFound("route_not_found")

    def supported_versions(self, domain: str) -> list[str]:
        return list(self._supported.get(domain, ()))


def _rewrite(route: Route, path: str, prefix: str, rest: str) -> str:
    rewrite = route.rewrite
    if rewrite is None:
        return path
    if rewrite.path is not None:
        return rewrite.path
    new = (rewrite.prefix or "") + (rest if rest != "/" or path.endswith("/") else "")
    return new or "/"


def _decoded(headers: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((name.decode(), value.decode()) for name, value in headers)
