"""Checks across a whole routes configuration: routes that overlap or can never match, upstreams
no route uses.

Routes of a version are matched in order, first full match wins. A later route whose paths and
methods are all taken by earlier ones can never match; two routes that both match some request,
where the later one is not a broader fallback of the earlier (``/profile`` then ``/**``), leave
the winner to their order alone. Both are mistakes the file's author cannot see in review, so
``check`` refuses them, naming the file and line. ``serve`` still loads such a file (first match
wins, as documented) and logs each finding as a warning.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from authz.errors import ConfigError
from gateway.routes_model import Route, RoutesConfig

__all__ = ["UnusedUpstream", "covers", "intersects", "lint_routes"]


def lint_routes(config: RoutesConfig) -> list[ConfigError]:
    """Every finding, in file order of the domains, then the unused upstreams."""
    findings = []
    for domain in config.domains:
        for version in domain.versions:
            finding = _lint_version(f"{domain.name} {version.name}", version.routes)
            if finding is not None:
                findings.append(finding)
    used = {r.upstream for d in config.domains for v in d.versions for r in v.routes}
    for name, upstream in config.upstreams.items():
        if name not in used:
            findings.append(
                UnusedUpstream(
                    f"upstream {name!r} is not used by any route (remove it, or route to it)",
                    **_place(upstream.source),
                )
            )
    return findings


class UnusedUpstream(ConfigError):
    """An upstream no route names: a mistake, unless an extension sends requests to it
    (``route_to``), which only the running extension knows."""


def _lint_version(label: str, routes: tuple[Route, ...]) -> ConfigError | None:
    """The first route of this version that overlaps or can never match, as an error."""
    for index, route in enumerate(routes):
        mine = _methods(route)
        taken: set[str] = set()
        everything = False
        for earlier in routes[:index]:
            theirs = _methods(earlier)
            if not intersects(_tokens(earlier.path), _tokens(route.path)):
                continue
            if not _overlap(mine, theirs):
                continue
            if covers(_tokens(earlier.path), _tokens(route.path)):
                if theirs is None:
                    everything = True
                else:
                    taken |= theirs
                continue
            if covers(_tokens(route.path), _tokens(earlier.path)):
                # A broader route after a narrower one is the usual fallback (/profile, then /**).
                continue
            return _error(
                route.source,
                f"{label}: route {route.name!r} ({route.path}) overlaps route {earlier.name!r} "
                f"({earlier.path}, {earlier.source}): a request can match both and only their "
                "order decides; make the paths disjoint or one a fallback of the other",
            )
        if everything or (mine is not None and taken and mine <= taken):
            return _error(
                route.source,
                f"{label}: route {route.name!r} ({route.path}) can never match: earlier routes "
                "take every path and method it has",
            )
        if taken and (mine is None or mine & taken):
            shared = ", ".join(sorted(taken if mine is None else mine & taken))
            return _error(
                route.source,
                f"{label}: route {route.name!r} ({route.path}) overlaps earlier routes for "
                f"{shared}: those requests never reach it",
            )
    return None


def _methods(route: Route) -> frozenset[str] | None:
    if route.methods is None:
        return None
    # The router answers HEAD with a GET route (RFC 9110 9.3.2).
    return route.methods | {"HEAD"} if "GET" in route.methods else route.methods


def _overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    return a is None or b is None or bool(a & b)


def _tokens(path: str) -> tuple[str, ...]:
    return tuple(path.split("/")[1:]) if path != "/" else ()


@cache
def covers(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    """Every path ``inner`` matches, ``outer`` matches too (``*`` one segment, ``**`` any)."""
    if not inner:
        return all(segment == "**" for segment in outer)
    if not outer:
        return False
    head, rest = outer[0], outer[1:]
    if head == "**":
        return covers(rest, inner) or covers(outer, inner[1:])
    if inner[0] == "**":
        return False
    if head == "*":
        return covers(rest, inner[1:])
    return inner[0] == head and covers(rest, inner[1:])


@cache
def intersects(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Some path matches both ``a`` and ``b``."""
    if not a or not b:
        return all(segment == "**" for segment in a or b)
    if a[0] == "**":
        return intersects(a[1:], b) or intersects(a, b[1:])
    if b[0] == "**":
        return intersects(a, b[1:]) or intersects(a[1:], b)
    if a[0] == "*" or b[0] == "*" or a[0] == b[0]:
        return intersects(a[1:], b[1:])
    return False


def _error(source: str, message: str) -> ConfigError:
    return ConfigError(message, **_place(source))


def _place(source: str) -> dict[str, Any]:
    """``FILE:LINE`` (a model object's source) as ConfigError's place."""
    file, _, line = source.rpartition(":")
    if not line.isdigit():
        return {"file": source or "<config>"}
    return {"file": file, "line": int(line), "column": 1}
