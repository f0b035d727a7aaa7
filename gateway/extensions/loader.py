"""Reads the ``extensions:`` section of the routes YAML and loads the extensions it names.

Each entry of ``registered`` names its code by ``factory: module:callable`` or by
``entry_point: name`` (group ``doma_gateway.extensions``), the points it joins, a timeout and
its settings. An installed entry point is only ever run when an entry names it: installing a
package must not change what the gateway does to requests. Errors point at the line, imports
included, so ``doma-gateway check`` catches a typo in a factory before anything serves.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from authz.loader import ROUTES_TOP_LEVEL_KEYS
from authz.yamlnodes import Node, load_documents
from gateway.extensions.api import BUILTIN_POINTS, Factory
from gateway.extensions.host import ExtensionHost, OnError, PointPlan, Step
from gateway.extensions.metrics import ExtensionMetrics
from gateway.routes_model import RoutesConfig

__all__ = ["ENTRY_POINT_GROUP", "load_extensions", "parse_extensions"]

ENTRY_POINT_GROUP = "doma_gateway.extensions"
_KEYS = ("points", "registered")
_POINT_KEYS = ("on_error", "routes")
_ENTRY_KEYS = ("name", "factory", "entry_point", "points", "timeout_seconds", "settings")
_NAME = re.compile(r"^[a-z][a-z0-9\-_]*\Z")
_DOMAIN_POINT = re.compile(r"^([a-z][a-z0-9\-]*)\.([a-z][a-z0-9_]*)\Z")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")
# A request waits for every extension of a point: keep each one's budget small.
DEFAULT_TIMEOUT = 0.1


def load_extensions(
    path: Path,
    config: RoutesConfig,
    metrics: ExtensionMetrics,
    *,
    upstreams: frozenset[str] | None = None,
) -> ExtensionHost | None:
    """The extension host for the routes at ``path``; None when no file has ``extensions:``.

    ``config`` is the whole edge (domain points are checked against it); ``upstreams`` the ones
    this process serves (``serve --domain``), which ``route_to`` may name.
    """
    found: list[tuple[Node, Node]] = []
    for document in load_documents(path):
        top = document.mapping(ROUTES_TOP_LEVEL_KEYS)
        section = top.get("extensions")
        if section is not None:
            found.append((top.key("extensions"), section))
    if not found:
        return None
    if len(found) > 1:
        raise found[1][0].error(
            f"a second 'extensions:' section (the first is at {found[0][0].where})"
        )
    return parse_extensions(found[0][1], config, metrics, upstreams=upstreams)


def parse_extensions(
    node: Node,
    config: RoutesConfig,
    metrics: ExtensionMetrics,
    *,
    upstreams: frozenset[str] | None = None,
) -> ExtensionHost:
    section = node.mapping(_KEYS)
    declared = _points(section.get("points"), config)
    steps: dict[str, list[Step]] = {name: [] for name in declared}
    names: dict[str, int] = {}
    for item in section.require("registered").items():
        entry = item.mapping(_ENTRY_KEYS)
        name_node = entry.require("name")
        name = name_node.str()
        if not _NAME.match(name):
            raise name_node.error(f"{name!r} is not a valid extension name (a-z, 0-9, '-', '_')")
        if name in names:
            raise name_node.error(f"extension {name!r} is already registered at line {names[name]}")
        names[name] = name_node.line
        timeout = DEFAULT_TIMEOUT
        if (n := entry.get("timeout_seconds")) is not None:
            timeout = n.float(minimum=0.001, maximum=30.0)
        settings = _plain(entry.get("settings"))
        factory, factory_node = _factory(entry, item)
        try:
            extension = factory(settings)
        except (TypeError, ValueError, KeyError) as exc:
            raise item.error(f"extension {name!r} refused its settings: {exc}") from exc
        except Exception as exc:
            raise factory_node.error(
                f"extension {name!r}: its factory raised {_described(exc)}"
            ) from exc
        if not callable(extension):
            raise item.error(f"extension {name!r}: its factory returned a non-callable")
        if not _is_async(extension):
            # A plain function's answer cannot be awaited: it would fail every request.
            raise factory_node.error(
                f"extension {name!r}: its factory returned a synchronous callable; an "
                "extension is async (async def __call__(self, call))"
            )
        points_node = entry.require("points")
        for point_node in (
            points_node.items() if isinstance(points_node.raw, yaml.SequenceNode) else [points_node]
        ):
            point = point_node.str()
            if point not in steps:
                if _DOMAIN_POINT.match(point):
                    raise point_node.error(
                        f"point {point!r} is not declared: add it under extensions.points"
                    )
                known = ", ".join(steps)
                raise point_node.error(f"unknown extension point {point!r} (known: {known})")
            steps[point].append(Step(name, extension, timeout, metrics.bind(name, point)))
    plans = {}
    for point, (on_error, domain, routes) in declared.items():
        if steps[point]:
            plans[point] = PointPlan(point, on_error, tuple(steps[point]), domain, routes)
    return ExtensionHost(plans, upstreams if upstreams is not None else frozenset(config.upstreams))


def _points(
    node: Node | None, config: RoutesConfig
) -> dict[str, tuple[OnError, str | None, frozenset[str] | None]]:
    # Requests wait on the points before the upstream: a broken safety check must not wave
    # requests through. Response headers are decoration: fail open there.
    points: dict[str, tuple[OnError, str | None, frozenset[str] | None]] = {
        "pre_route": ("fail_closed", None, None),
        "pre_upstream": ("fail_closed", None, None),
        "post_response": ("fail_open", None, None),
    }
    if node is None:
        return points
    for key, value in node.entries("point: {on_error: ..., routes: [...]}"):
        point = key.str()
        settings = value.mapping(_POINT_KEYS) if not value.is_null() else None
        domain: str | None = None
        routes: frozenset[str] | None = None
        if point not in BUILTIN_POINTS:
            found = _DOMAIN_POINT.match(point)
            if found is None:
                raise key.error(
                    f"{point!r} is neither a built-in point ({', '.join(BUILTIN_POINTS)}) nor "
                    "a domain point '<domain>.<name>' (e.g. rides.pre_ride)"
                )
            domain = found.group(1)
            owner = config.domain(domain)
            if owner is None:
                known = ", ".join(d.name for d in config.domains)
                raise key.error(f"point {point!r}: no domain {domain!r} (known: {known})")
            if settings is not None and (n := settings.get("routes")) is not None:
                names = {r.name for v in owner.versions for r in v.routes}
                for item in n.items():
                    if item.str() not in names:
                        raise item.error(
                            f"{domain} has no route {item.str()!r} "
                            f"(known: {', '.join(sorted(names))})"
                        )
                routes = frozenset(n.str_list())
        elif settings is not None and "routes" in settings:
            raise settings.key("routes").error("'routes' applies to domain points only")
        on_error = points.get(point, ("fail_closed", None, None))[0]
        if settings is not None and (n := settings.get("on_error")) is not None:
            on_error = n.choice(("fail_open", "fail_closed"))  # type: ignore[assignment]
        points[point] = (on_error, domain, routes)
    return points


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _is_async(extension: object) -> bool:
    # A function, or an object whose class defines ``async def __call__``.
    return inspect.iscoroutinefunction(extension) or inspect.iscoroutinefunction(
        type(extension).__call__
    )


def _factory(entry: Any, item: Node) -> tuple[Factory, Node]:
    present = [key for key in ("factory", "entry_point") if key in entry]
    if len(present) != 1:
        raise item.error(
            "an extension needs exactly one of 'factory' (module:callable) or 'entry_point'"
        )
    node = entry.require(present[0])
    text = node.str()
    if present[0] == "factory":
        if not _FACTORY.match(text):
            raise node.error(
                f"factory {text!r} must be module:callable, e.g. examples.promo_tag:create"
            )
        module_name, _, attribute = text.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise node.error(f"cannot import {module_name!r}: {exc}") from exc
        except Exception as exc:
            # Its code is broken (a syntax error, an error at import): still a config error.
            raise node.error(f"cannot import {module_name!r}: {_described(exc)}") from exc
        factory = getattr(module, attribute, None)
    else:
        found = [
            ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == text
        ]
        if not found:
            installed = sorted(
                ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            )
            raise node.error(
                f"no entry point {text!r} in group {ENTRY_POINT_GROUP} "
                f"(installed: {', '.join(installed) or 'none'})"
            )
        try:
            factory = found[0].load()
        except Exception as exc:
            raise node.error(f"entry point {text!r} cannot load: {_described(exc)}") from exc
    if not callable(factory):
        raise node.error(f"{text!r} is not a callable factory")
    return factory, node


# What a settings value may be: the plain YAML types, as everywhere else in the routes.
_PLAIN_TAGS = frozenset(
    "tag:yaml.org,2002:" + kind
    for kind in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map")
)


def _plain(node: Node | None) -> Mapping[str, Any]:
    """Settings as plain Python values, as the factory receives them, held to the rules of the
    rest of the file: no duplicate key, no tag beyond the plain types (each error with its
    line)."""
    if node is None:
        return {}
    if not isinstance(node.raw, yaml.MappingNode):
        raise node.error("settings must be a mapping")
    value: dict[str, Any] = _plain_value(node.raw, node.file, {})
    return value


def _plain_value(raw: yaml.Node, file: str, built: dict[int, Any]) -> Any:
    # ``built``: one value per node, so an alias is the anchor's value again (never a copy):
    # nested aliases cannot multiply (a billion laughs), and a node inside itself ends.
    if id(raw) in built:
        return built[id(raw)]
    if raw.tag not in _PLAIN_TAGS:
        raise Node(raw, file).error(f"a settings value cannot carry the tag {raw.tag!r}")
    if isinstance(raw, yaml.MappingNode):
        mapping: dict[Any, Any] = {}
        built[id(raw)] = mapping
        for key_node, value_node in raw.value:
            key = _plain_value(key_node, file, built)
            if isinstance(key, dict | list):
                raise Node(key_node, file).error("a settings key must be a plain value")
            if key in mapping:
                raise Node(key_node, file).error(f"duplicate key {key!r}")
            mapping[key] = _plain_value(value_node, file, built)
        return mapping
    if isinstance(raw, yaml.SequenceNode):
        sequence: list[Any] = []
        built[id(raw)] = sequence
        sequence.extend(_plain_value(item, file, built) for item in raw.value)
        return sequence
    try:
        scalar = yaml.SafeLoader("").construct_object(raw)
    except yaml.YAMLError as exc:
        raise Node(raw, file).error(f"not a plain value: {exc}") from None
    built[id(raw)] = scalar
    return scalar
