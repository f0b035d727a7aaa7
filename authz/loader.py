"""Reads the ``auth:`` section of the routes YAML into :class:`AuthSettings`.

The routes YAML is one file or a directory of files (one per domain team); exactly one of them
holds ``auth:``. Every error names the file, the line and the offending key.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from authz.bypass import validate_glob
from authz.errors import ConfigError
from authz.keys import KeyParseError, parse_jwks, parse_pem
from authz.revocation_loader import parse_revocation
from authz.settings import (
    ASYMMETRIC_ALGORITHMS,
    AuthSettings,
    ClaimHeader,
    IssuerSettings,
    JwksCachePolicy,
    KeySourceSettings,
)
from authz.yamlnodes import Mapping, Node, load_documents

__all__ = ["ROUTES_TOP_LEVEL_KEYS", "load_auth_settings", "parse_auth_section"]

# The sections a routes file may hold; the gateway reads the others.
ROUTES_TOP_LEVEL_KEYS = (
    "auth",
    "layers",
    "domains",
    "upstreams",
    "gateway",
    "inter_domain",
    "extensions",
)
_AUTH_KEYS = ("issuers", "claims_to_headers", "bypass", "token", "revocation")
_TOKEN_KEYS = ("max_bytes", "cache_size")
_KEY_SOURCES = ("jwks_url", "jwks_file", "public_key_file", "public_key")
_ISSUER_KEYS = (
    "issuer",
    "audiences",
    *_KEY_SOURCES,
    "key_id",
    "algorithms",
    "leeway_seconds",
    "required_claims",
    "jwks_cache",
)
_JWKS_CACHE_KEYS = (
    "min_ttl_seconds",
    "max_ttl_seconds",
    "default_ttl_seconds",
    "refetch_min_interval_seconds",
    "timeout_seconds",
)
_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\Z")
# Headers a claim may not name: credentials, framing, hop-by-hop fields (a proxy drops them, so
# the claim would vanish on the way), and those the edge sets itself from what it saw (the
# client's address and protocol, the request id): a claim there would forge them.
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-real-ip",
        "x-request-id",
        "x-envoy-auth-headers-to-remove",
    }
)
MAX_LEEWAY_SECONDS = 300


def load_auth_settings(path: Path) -> AuthSettings:
    """The ``auth:`` section found under ``path`` (a routes file or directory)."""
    found: list[tuple[Node, Node]] = []
    for document in load_documents(path):
        top = document.mapping(ROUTES_TOP_LEVEL_KEYS)
        section = top.get("auth")
        if section is not None:
            found.append((top.key("auth"), section))
        elif "auth" in top:
            raise top.key("auth").error("the auth: section is empty (it needs issuers)")
    if not found:
        raise ConfigError("no 'auth:' section in any routes file", file=str(path))
    if len(found) > 1:
        key, _ = found[1]
        raise key.error(f"a second 'auth:' section (the first is at {found[0][0].where})")
    return parse_auth_section(found[0][1])


def parse_auth_section(node: Node) -> AuthSettings:
    auth = node.mapping(_AUTH_KEYS)
    issuers_node = auth.require("issuers")
    issuers = tuple(_issuer(item) for item in issuers_node.items())
    if not issuers:
        raise issuers_node.error("at least one issuer is required")
    seen: dict[str, int] = {}
    for item, issuer in zip(issuers_node.items(), issuers, strict=True):
        if issuer.issuer in seen:
            raise item.error(
                f"issuer {issuer.issuer!r} is listed twice (first at line {seen[issuer.issuer]})"
            )
        seen[issuer.issuer] = item.line

    token = auth.get("token")
    max_bytes, cache_size = 8192, 10_000
    if token is not None:
        token_map = token.mapping(_TOKEN_KEYS)
        if (n := token_map.get("max_bytes")) is not None:
            max_bytes = n.int(minimum=256, maximum=65_536)
        if (n := token_map.get("cache_size")) is not None:
            cache_size = n.int(minimum=0, maximum=10_000_000)

    return AuthSettings(
        issuers=issuers,
        claims_to_headers=_claims_to_headers(auth.get("claims_to_headers")),
        bypass=_bypass(auth.get("bypass")),
        max_token_bytes=max_bytes,
        token_cache_size=cache_size,
        revocation=parse_revocation(auth.get("revocation")),
        source=node.where,
    )


def _issuer(node: Node) -> IssuerSettings:
    issuer = node.mapping(_ISSUER_KEYS)
    name = issuer.require("issuer").str()
    audiences_node = issuer.require("audiences")
    audiences = audiences_node.str_list()
    if not audiences:
        raise audiences_node.error("at least one audience is required")

    algorithms: tuple[str, ...] = ("RS256",)
    if (n := issuer.get("algorithms")) is not None:
        algorithms = n.str_list()
        for item, algorithm in zip(
            n.items() if isinstance(n.raw, yaml.SequenceNode) else [n], algorithms, strict=True
        ):
            if algorithm not in ASYMMETRIC_ALGORITHMS:
                raise item.error(
                    f"algorithm {algorithm!r} is not allowed; only asymmetric algorithms are "
                    f"({', '.join(ASYMMETRIC_ALGORITHMS)})"
                )
        if not algorithms:
            raise n.error("at least one algorithm is required")

    leeway = 30.0
    if (n := issuer.get("leeway_seconds")) is not None:
        leeway = n.float(minimum=0, maximum=MAX_LEEWAY_SECONDS)
    required: tuple[str, ...] = ("exp",)
    if (n := issuer.get("required_claims")) is not None:
        required = tuple(dict.fromkeys(("exp", *n.str_list())))

    return IssuerSettings(
        issuer=name,
        audiences=audiences,
        keys=_key_source(issuer),
        algorithms=algorithms,
        leeway=leeway,
        required_claims=required,
        jwks_cache=_jwks_cache(issuer.get("jwks_cache")),
    )


def _key_source(issuer: Mapping) -> KeySourceSettings:
    present = [kind for kind in _KEY_SOURCES if kind in issuer]
    if len(present) != 1:
        which = "none" if not present else " and ".join(present)
        raise issuer.error(
            f"exactly one key source is required ({', '.join(_KEY_SOURCES)}); got {which}"
        )
    kind = present[0]
    node = issuer.require(kind)
    value = node.str()
    key_id = issuer.get("key_id")
    if key_id is not None and kind not in ("public_key_file", "public_key"):
        raise issuer.key("key_id").error("key_id applies only to public_key and public_key_file")
    base = Path(node.file).parent
    if kind == "jwks_url":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise node.error(
                f"jwks_url must be an http:// or https:// URL with a host, got {value!r}"
            )
        return KeySourceSettings("jwks_url", value)
    if kind == "public_key":
        _check_key(node, lambda: parse_pem(value.encode(), None))
        return KeySourceSettings("public_key", value, key_id.str() if key_id else None)
    path = (base / value).resolve()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise node.error(f"cannot read {kind} {str(path)!r}: {exc.strerror}") from exc
    if kind == "jwks_file":
        _check_key(node, lambda: parse_jwks(data))
    else:
        _check_key(node, lambda: parse_pem(data, None))
    return KeySourceSettings(kind, str(path), key_id.str() if key_id else None)  # type: ignore[arg-type]


def _check_key(node: Node, parse: object) -> None:
    try:
        parse()  # type: ignore[operator]
    except KeyParseError as exc:
        raise node.error(str(exc)) from exc


def _jwks_cache(node: Node | None) -> JwksCachePolicy:
    if node is None:
        return JwksCachePolicy()
    cache = node.mapping(_JWKS_CACHE_KEYS)
    defaults = JwksCachePolicy()

    def seconds(key: str, default: float) -> float:
        value = cache.get(key)
        return default if value is None else value.float(minimum=0.0, maximum=86_400 * 7)

    policy = JwksCachePolicy(
        min_ttl=seconds("min_ttl_seconds", defaults.min_ttl),
        max_ttl=seconds("max_ttl_seconds", defaults.max_ttl),
        default_ttl=seconds("default_ttl_seconds", defaults.default_ttl),
        refetch_min_interval=seconds("refetch_min_interval_seconds", defaults.refetch_min_interval),
        timeout=seconds("timeout_seconds", defaults.timeout),
    )
    if policy.min_ttl > policy.max_ttl:
        raise node.error("min_ttl_seconds must not exceed max_ttl_seconds")
    if policy.timeout <= 0:
        raise cache.key("timeout_seconds").error("timeout_seconds must be greater than 0")
    return policy


def _claims_to_headers(node: Node | None) -> tuple[ClaimHeader, ...]:
    if node is None:
        return ()
    result: list[ClaimHeader] = []
    headers: dict[str, int] = {}
    for claim_node, header_node in node.entries("claim: header-name"):
        header = header_node.str().lower()
        if not _HEADER_NAME.match(header):
            raise header_node.error(
                f"{header!r} is not a valid header name (lower-case letters, digits, '-')"
            )
        if header in _RESERVED_HEADERS:
            raise header_node.error(f"{header!r} is reserved and cannot carry a claim")
        if header in headers:
            raise header_node.error(f"header {header!r} is already used at line {headers[header]}")
        headers[header] = header_node.line
        result.append(ClaimHeader(claim_node.str(), header))
    return tuple(result)


def _bypass(node: Node | None) -> tuple[str, ...]:
    if node is None:
        return ()
    patterns = []
    for item in node.items():
        pattern = item.str()
        problem = validate_glob(pattern)
        if problem:
            raise item.error(f"bypass path {pattern!r} {problem}")
        patterns.append(pattern)
    return tuple(patterns)
