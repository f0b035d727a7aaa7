"""Reads the routes YAML (one file, or a directory of files merged) into :class:`RoutesConfig`.

Each domain team may own one file; ``layers`` and ``gateway`` may appear in one file only,
domain and upstream names must be unique across files. Every error names the file, line and
column of the offending key and, where it helps, the values that would have been valid.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from authz.bypass import validate_glob
from authz.errors import ConfigError
from authz.loader import ROUTES_TOP_LEVEL_KEYS
from authz.yamlnodes import Node, load_documents
from gateway.policies import POLICIES
from gateway.policies.chain import check_order
from gateway.routes_model import (
    Domain,
    GatewaySettings,
    PolicyRef,
    Rewrite,
    Route,
    RoutesConfig,
    Upstream,
    Version,
)
from gateway.upstream_loader import parse_methods, parse_upstream, seconds

__all__ = ["VERSION_NAME", "load_routes", "parse_documents"]

VERSION_NAME = re.compile(r"^v[0-9][0-9a-z.\-]*\Z")
_NAME = re.compile(r"^[a-z][a-z0-9\-]*\Z")
_DOMAIN_KEYS = (
    "layer",
    "owner",
    "depends_on",
    "upstream",
    "auth",
    "default_version",
    "policies",
    "versions",
)
_VERSION_KEYS = ("deprecated", "sunset", "link", "routes")
_URI = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+\Z")
_ROUTE_KEYS = ("name", "path", "methods", "upstream", "rewrite", "auth", "policies")
_REWRITE_KEYS = ("prefix", "path")
_GATEWAY_KEYS = (
    "listen",
    "admin",
    "trusted_proxies",
    "buffer_bytes",
    "drain_seconds",
    "transport",
    "access_log",
    "max_request_head_bytes",
    "client_head_seconds",
    "client_body_idle_seconds",
)


def load_routes(path: Path) -> RoutesConfig:
    """The routes configuration under ``path`` (a file, or a directory of ``*.yaml`` files)."""
    return parse_documents(load_documents(path), source=str(path))


def parse_documents(documents: list[Node], *, source: str = "<config>") -> RoutesConfig:
    layers: tuple[str, ...] | None = None
    layers_key: Node | None = None
    gateway: GatewaySettings | None = None
    gateway_key: Node | None = None
    upstream_nodes: dict[str, tuple[Node, Node]] = {}
    domain_nodes: dict[str, tuple[Node, Node]] = {}
    for document in documents:
        top = document.mapping(ROUTES_TOP_LEVEL_KEYS)
        if (node := top.get("layers")) is not None:
            if layers_key is not None:
                raise top.key("layers").error(f"'layers' is already defined at {layers_key.where}")
            layers_key, layers = top.key("layers"), _layers(node)
        if (node := top.get("gateway")) is not None:
            if gateway_key is not None:
                raise top.key("gateway").error(
                    f"'gateway' is already defined at {gateway_key.where}"
                )
            gateway_key, gateway = top.key("gateway"), _gateway(node)
        for name, key, value in _named(top.get("upstreams")):
            if name in upstream_nodes:
                raise key.error(
                    f"upstream {name!r} is already defined at {upstream_nodes[name][0].where}"
                )
            upstream_nodes[name] = (key, value)
        for name, key, value in _named(top.get("domains")):
            if name in domain_nodes:
                raise key.error(
                    f"domain {name!r} is already defined at {domain_nodes[name][0].where}"
                )
            domain_nodes[name] = (key, value)

    if not domain_nodes:
        raise ConfigError("no 'domains:' in any routes file", file=source)
    if layers is None:
        # Missing from the whole set, not from one file: name what was loaded (file or directory).
        raise ConfigError(
            "no 'layers:' list in any routes file (e.g. layers: [infrastructure, product])",
            file=source,
        )
    upstreams = {
        name: parse_upstream(name, key, value) for name, (key, value) in upstream_nodes.items()
    }
    domains = tuple(
        _domain(name, key, value, layers, upstreams) for name, (key, value) in domain_nodes.items()
    )
    _check_dependencies(domains, domain_nodes, layers)
    for domain in domains:
        for version in domain.versions:
            for route in version.routes:
                check_order(domain, version, route)
    files = tuple(dict.fromkeys(document.file for document in documents))
    return RoutesConfig(layers, domains, upstreams, gateway or GatewaySettings(), files)


def _named(node: Node | None) -> list[tuple[str, Node, Node]]:
    """The entries of a ``name: {...}`` mapping, names validated, in file order."""
    if node is None:
        return []
    entries = []
    for key, value in node.entries("name: settings"):
        name = key.str()
        if not _NAME.match(name):
            raise key.error(f"{name!r} is not a valid name (lower-case letters, digits and '-')")
        entries.append((name, key, value))
    return entries


def _layers(node: Node) -> tuple[str, ...]:
    layers = node.str_list()
    if not layers:
        raise node.error("at least one layer is required")
    for item, layer in zip(node.items(), layers, strict=True):
        # Layers name graph nodes, metric labels and exported Kubernetes labels.
        if not layer.strip() or not layer.isprintable():
            raise item.error(f"layer {layer!r} must be printable text")
        if layers.count(layer) > 1:
            raise item.error(f"layer {layer!r} is listed twice")
    return layers


def _gateway(node: Node) -> GatewaySettings:
    g = node.mapping(_GATEWAY_KEYS)
    defaults = GatewaySettings()
    trusted: tuple[str, ...] = ()
    if (n := g.get("trusted_proxies")) is not None:
        import ipaddress

        trusted = n.str_list()
        for item, cidr in zip(
            n.items() if isinstance(n.raw, yaml.SequenceNode) else [n], trusted, strict=True
        ):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise item.error(f"{cidr!r} is not an IP address or CIDR range") from exc
    listen, admin = g.get("listen"), g.get("admin")
    buffer_bytes, transport = g.get("buffer_bytes"), g.get("transport")
    access_log = g.get("access_log")
    return GatewaySettings(
        listen=_address(listen) if listen is not None else defaults.listen,
        admin=_address(admin) if admin is not None else defaults.admin,
        trusted_proxies=trusted,
        buffer_bytes=buffer_bytes.int(minimum=0, maximum=64 * 1024 * 1024)
        if buffer_bytes is not None
        else defaults.buffer_bytes,
        drain_seconds=seconds(g, "drain_seconds", defaults.drain_seconds, minimum=0.0),
        transport=transport.choice(("http1", "aiohttp", "httpcore"))  # type: ignore[arg-type]
        if transport is not None
        else defaults.transport,
        access_log=access_log.bool() if access_log is not None else defaults.access_log,
        max_request_head_bytes=head_bytes.int(minimum=1024, maximum=1024 * 1024)
        if (head_bytes := g.get("max_request_head_bytes")) is not None
        else defaults.max_request_head_bytes,
        client_head_seconds=seconds(
            g, "client_head_seconds", defaults.client_head_seconds, minimum=0.1
        ),
        client_body_idle_seconds=seconds(
            g, "client_body_idle_seconds", defaults.client_body_idle_seconds, minimum=0.1
        ),
    )


def _address(node: Node) -> str:
    value = node.str()
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise node.error(f"expected HOST:PORT, got {value!r}")
    return value


def _domain(
    name: str, key: Node, node: Node, layers: tuple[str, ...], upstreams: dict[str, Upstream]
) -> Domain:
    if VERSION_NAME.match(name):
        raise key.error(
            f"domain name {name!r} looks like a version, which makes "
            "/api/{version}/{domain} ambiguous"
        )
    domain = node.mapping(_DOMAIN_KEYS)
    layer_node = domain.require("layer")
    layer = layer_node.str()
    if layer not in layers:
        raise layer_node.error(f"layer {layer!r} is not defined (known: {', '.join(layers)})")
    owner = domain.require("owner").str()
    default_upstream: str | None = None
    if (n := domain.get("upstream")) is not None:
        default_upstream = _upstream_name(n, upstreams)
    default_auth = "required"
    if (n := domain.get("auth")) is not None:
        default_auth = n.choice(("required", "bypass"))
    versions_node = domain.require("versions")
    versions = tuple(
        _version(v_name, v_key, v_node, default_upstream, default_auth, upstreams)
        for v_name, v_key, v_node in _versions(versions_node)
    )
    if not versions:
        raise versions_node.error("at least one version is required")
    default_version = versions[-1].name
    if (n := domain.get("default_version")) is not None:
        default_version = n.str()
        if all(v.name != default_version for v in versions):
            raise n.error(
                f"default_version {default_version!r} is not one of this domain's versions "
                f"(known: {', '.join(v.name for v in versions)})"
            )
    depends_on: tuple[str, ...] = ()
    if (n := domain.get("depends_on")) is not None:
        depends_on = n.str_list()
    return Domain(
        name=name,
        layer=layer,
        owner=owner,
        versions=versions,
        default_version=default_version,
        depends_on=depends_on,
        policies=_policies(domain.get("policies")),
        source=key.where,
    )


def _versions(node: Node) -> list[tuple[str, Node, Node]]:
    entries = []
    for key, value in node.entries("version: {routes: [...]}, e.g. v1:"):
        name = key.str()
        if not VERSION_NAME.match(name):
            raise key.error(
                f"version {name!r} must look like v1, v2, v2.1 (v, a digit, then [0-9a-z.-])"
            )
        entries.append((name, key, value))
    return entries


def _upstream_name(node: Node, upstreams: dict[str, Upstream]) -> str:
    name = node.str()
    if name not in upstreams:
        known = ", ".join(upstreams) or "none defined"
        raise node.error(f"upstream {name!r} is not defined (known: {known})")
    return name


def _version(
    name: str,
    key: Node,
    node: Node,
    default_upstream: str | None,
    default_auth: str,
    upstreams: dict[str, Upstream],
) -> Version:
    version = node.mapping(_VERSION_KEYS)
    deprecated = _timestamp(version.get("deprecated"))
    sunset = _timestamp(version.get("sunset"))
    if deprecated and sunset and sunset < deprecated:
        raise version.key("sunset").error("sunset must not be before the deprecation date")
    link = None
    if (n := version.get("link")) is not None:
        link = n.str()
        # It goes out in a Link header as <link>: a URI's characters only (RFC 3986), so no
        # line break, space or '>' can end the header or the reference early.
        if urlsplit(link).scheme not in ("http", "https") or not _URI.match(link):
            raise n.error(f"link must be an http(s) URL, got {link!r}")
    routes_node = version.require("routes")
    named: dict[str, Route] = {}
    for item in routes_node.items():
        route = _route(item, default_upstream, default_auth, upstreams)
        # Metrics, the admin API and extension points tell a version's routes apart by name.
        first = named.setdefault(route.name, route)
        if first is not route:
            raise item.error(f"route name {route.name!r} is already used at {first.source}")
    routes = tuple(named.values())
    if not routes:
        raise routes_node.error("at least one route is required")
    return Version(name, routes, deprecated, sunset, link, source=key.where)


def _timestamp(node: Node | None) -> datetime | None:
    if node is None:
        return None
    value = node.raw.value if isinstance(node.raw, yaml.ScalarNode) else None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise node.error(
            f"expected a date or timestamp like 2026-12-31 or 2026-12-31T00:00:00Z, got {value!r}"
        ) from exc
    if isinstance(parsed, date) and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _route(
    node: Node, default_upstream: str | None, default_auth: str, upstreams: dict[str, Upstream]
) -> Route:
    route = node.mapping(_ROUTE_KEYS)
    path_node = route.require("path")
    path = path_node.str()
    problem = validate_glob(path)
    if problem:
        raise path_node.error(f"path {path!r} {problem}")
    if (n := route.get("upstream")) is not None:
        upstream = _upstream_name(n, upstreams)
    elif default_upstream is not None:
        upstream = default_upstream
    else:
        raise route.error("missing required key 'upstream' (or set 'upstream' on the domain)")
    methods = route.get("methods")
    auth = route.get("auth")
    return Route(
        path=path,
        upstream=upstream,
        methods=parse_methods(methods) if methods is not None else None,
        rewrite=_rewrite(route.get("rewrite")),
        auth=auth.choice(("required", "bypass")) if auth is not None else default_auth,  # type: ignore[arg-type]
        policies=_policies(route.get("policies")),
        name=_route_name(route.get("name"), path),
        source=node.where,
    )


def _route_name(node: Node | None, path: str) -> str:
    if node is None:
        return path
    name = node.str()
    # A route's name is a metric label, a log field and a line of the domain map: one line.
    if not name or not name.isprintable():
        raise node.error(f"route name {name!r} must be printable text without control characters")
    return name


def _rewrite(node: Node | None) -> Rewrite | None:
    if node is None:
        return None
    rewrite = node.mapping(_REWRITE_KEYS)
    present = [k for k in _REWRITE_KEYS if k in rewrite]
    if len(present) != 1:
        raise node.error(
            "rewrite needs exactly one of: prefix (replaces /api/{version}/{domain}), path"
        )
    value_node = rewrite.require(present[0])
    value = value_node.str()
    if not value.startswith("/") or validate_glob(value) or "*" in value:
        raise value_node.error(
            f"rewrite {present[0]} {value!r} must be a plain path starting with '/'"
        )
    if present[0] == "prefix":
        return Rewrite(prefix=value.rstrip("/"))
    return Rewrite(path=value)


def _policies(node: Node | None) -> tuple[PolicyRef, ...]:
    if node is None:
        return ()
    refs: list[PolicyRef] = []
    for item in node.items():
        if isinstance(item.raw, yaml.ScalarNode):
            name, settings = item.str(), None
        else:
            if not isinstance(item.raw, yaml.MappingNode) or len(item.raw.value) != 1:
                raise item.error("a policy is a name, or a mapping of one name to its settings")
            key_raw, value_raw = item.raw.value[0]
            name, settings = Node(key_raw, item.file).str(), Node(value_raw, item.file)
        spec = POLICIES.get(name)
        if spec is None:
            known = ", ".join(POLICIES) or "none are installed"
            raise item.error(f"unknown policy {name!r} (known: {known})")
        if any(ref.name == name for ref in refs):
            raise item.error(f"policy {name!r} is listed twice in this chain")
        # Settings are parsed here, once: a wrong setting fails `check` with its line.
        refs.append(PolicyRef(name, spec.parse(settings, item), item.where))
    return tuple(refs)


def _check_dependencies(
    domains: tuple[Domain, ...], nodes: dict[str, tuple[Node, Node]], layers: tuple[str, ...]
) -> None:
    by_name = {domain.name: domain for domain in domains}
    rank = {layer: index for index, layer in enumerate(layers)}
    for domain in domains:
        deps_node = nodes[domain.name][1].mapping(_DOMAIN_KEYS).get("depends_on")
        for dep in domain.depends_on:
            where = deps_node if deps_node is not None else nodes[domain.name][0]
            target = by_name.get(dep)
            if target is None:
                raise where.error(
                    f"{domain.name} depends on unknown domain {dep!r} (known: {', '.join(by_name)})"
                )
            if dep == domain.name:
                raise where.error(f"{domain.name} depends on itself")
            if rank[target.layer] > rank[domain.layer]:
                raise where.error(
                    f"{domain.name} ({domain.layer}) depends on {dep} ({target.layer}): "
                    "a domain may only depend on its own or lower layers "
                    f"(order: {' < '.join(layers)})"
                )
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            raise nodes[name][0].error(f"dependency cycle: {' -> '.join(cycle)}")
        visiting.append(name)
        for dep in by_name[name].depends_on:
            visit(dep)
        visiting.pop()
        done.add(name)

    for domain in domains:
        visit(domain.name)
