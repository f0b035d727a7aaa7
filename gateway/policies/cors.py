"""CORS, answered at the gateway: preflights never reach a domain service.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered 204
with the allowed methods and headers when the origin, method and headers are allowed, else 403
``cors_preflight_denied``. An actual request from an allowed origin gets
``Access-Control-Allow-Origin`` (and ``-Credentials``, ``-Expose-Headers``) on its response;
from another origin, or without ``Origin``, it passes with no CORS header and the browser
withholds the answer. ``Vary: Origin`` is set on every answer whenever the answer depends on the
origin (the origin is echoed), so a shared cache never serves one origin's copy to another.

Origins are exact (``https://app.example``), ``*``, or a wildcard subdomain
(``https://*.example.com``). With ``allow_credentials`` the actual origin is echoed, never ``*``
(the Fetch standard forbids ``*`` with credentials).

A browser sends its origin serialised: scheme and host lower-case, no default port. Configured
origins are read the same way, so ``https://App.Example:443`` matches what the browser sends;
settings that could never match (no origin, no method, a port past 65535) are refused, and so is
a wildcard over a single label (``https://*.com``), which would take in every site under a
top-level domain. Wildcards over multi-label public suffixes (``*.co.uk``) are not recognised:
no list of public suffixes is kept.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass

from authz.yamlnodes import Node
from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.policies.denial import Denial
from gateway.policies.response_headers import SCOPE_KEY as RESPONSE_HEADERS
from gateway.policies.spec import ChainContext, PolicySpec, header_names, listed, method_names

__all__ = ["SPEC", "CorsPolicy", "CorsSettings"]

_KEYS = (
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "allow_credentials",
    "max_age_seconds",
)
_DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_ORIGIN = re.compile(r"^(https?)://(\*\.)?([a-z0-9.\-]+)(?::([0-9]{1,5}))?\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class CorsSettings:
    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = _DEFAULT_METHODS
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age_seconds: int = 600


def parse(node: Node | None, item: Node) -> CorsSettings:
    if node is None:
        raise item.error("cors needs settings, e.g. - cors: {allow_origins: [https://app.example]}")
    m = node.mapping(_KEYS)
    origins_node = m.require("allow_origins")
    origins = tuple(_origin(item) for item in listed(origins_node))
    if not origins:
        raise origins_node.error(
            "allow_origins is empty: no request could ever match (list the origins, or '*')"
        )
    methods = m.get("allow_methods")
    if methods is not None and not listed(methods):
        raise methods.error(
            "allow_methods is empty: every preflight would be refused "
            f"(leave it out for {' '.join(_DEFAULT_METHODS)})"
        )
    headers = m.get("allow_headers")
    expose = m.get("expose_headers")
    credentials = m.get("allow_credentials")
    max_age = m.get("max_age_seconds")
    settings = CorsSettings(
        allow_origins=origins,
        allow_methods=method_names(methods) if methods else _DEFAULT_METHODS,
        allow_headers=header_names(headers, star=True) if headers else (),
        expose_headers=header_names(expose) if expose else (),
        allow_credentials=credentials.bool() if credentials is not None else False,
        max_age_seconds=max_age.int(minimum=0, maximum=86_400) if max_age is not None else 600,
    )
    if settings.allow_credentials and "*" in settings.allow_headers:
        raise node.error("allow_headers '*' cannot be combined with allow_credentials")
    if settings.allow_credentials and "*" in settings.allow_origins:
        # The origin is echoed with credentials: every site on the web could read answers
        # made with the user's cookies. Name the origins that may.
        raise origins_node.error(
            "allow_origins '*' cannot be combined with allow_credentials (list the origins)"
        )
    return settings


def _origin(node: Node) -> str:
    """One allowed origin, serialised as a browser sends it: lower-case, no default port."""
    text = node.str()
    if text == "*":
        return text
    match = _ORIGIN.match(text.lower())
    if match is None:
        raise node.error(f"origin {text!r} must be '*', scheme://host[:port] or scheme://*.domain")
    scheme, wildcard, host, port_text = match.groups()
    port = int(port_text) if port_text is not None else None
    if port is not None and not 0 < port <= 65535:
        raise node.error(f"origin {text!r}: port {port_text} is not between 1 and 65535")
    if wildcard and "." not in host.strip("."):
        # Any site under the top-level domain could register a matching name: with credentials,
        # evil.com would read answers made with the user's cookies.
        raise node.error(
            f"origin {text!r}: a wildcard needs a domain of two labels or more under it "
            f"({scheme}://*.example.com), not a top-level domain alone"
        )
    suffix = "" if port is None or port == _DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{wildcard or ''}{host}{suffix}"


_VARY = ((b"vary", b"Origin"),)


class CorsPolicy:
    def __init__(self, app: ASGIApp, *, settings: CorsSettings, denied: Denial):
        self.app = app
        self._denied = denied
        self._any_origin = "*" in settings.allow_origins
        self._exact = frozenset(o.encode() for o in settings.allow_origins if "*" not in o)
        wildcards = [
            re.escape(o).replace(r"\*\.", r"[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.")
            for o in settings.allow_origins
            if "*." in o
        ]
        self._wildcard = re.compile("|".join(wildcards).encode()) if wildcards else None
        self._methods = frozenset(m.encode() for m in settings.allow_methods)
        self._any_header = "*" in settings.allow_headers
        self._headers = frozenset(h.encode() for h in settings.allow_headers)
        self._credentials = settings.allow_credentials
        # Echo the origin unless any origin is allowed without credentials.
        self._echo = not (self._any_origin and not settings.allow_credentials)
        simple: list[tuple[bytes, bytes]] = []
        if settings.allow_credentials:
            simple.append((b"access-control-allow-credentials", b"true"))
        if settings.expose_headers:
            simple.append(
                (b"access-control-expose-headers", ", ".join(settings.expose_headers).encode())
            )
        self._simple = tuple(simple)
        # Response headers per allowed origin (only allowed ones enter).
        self._added: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
        self._preflight = (
            (b"access-control-allow-methods", ", ".join(settings.allow_methods).encode()),
            (b"access-control-max-age", str(settings.max_age_seconds).encode()),
            *simple,
        )

    def _allowed(self, origin: bytes) -> bool:
        if self._any_origin or origin in self._exact:
            return True
        return self._wildcard is not None and self._wildcard.fullmatch(origin) is not None

    def _origin_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        if self._echo:
            return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        return [(b"access-control-allow-origin", b"*")]

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        origin = None
        if scope["method"] == "OPTIONS":
            request_method = request_headers = None
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value
                elif name == b"access-control-request-method":
                    request_method = value
                elif name == b"access-control-request-headers":
                    request_headers = value
            if origin is not None and request_method is not None:
                return self._answer_preflight(scope, send, origin, request_method, request_headers)
        else:
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value
                    break
        # An origin allowed before has its headers ready: a page sends one origin over and over.
        added = self._added.get(origin) if origin is not None else None
        if added is None:
            if origin is None or not self._allowed(origin):
                if self._echo:
                    # The answer still depends on Origin (another one would get CORS headers): a
                    # shared cache must not hand this copy to an allowed page.
                    scope[RESPONSE_HEADERS].extend(_VARY)
                return self.app(scope, receive, send)
            if len(self._added) >= 1024:
                self._added.clear()
            added = self._added[origin] = (*self._origin_headers(origin), *self._simple)
        scope[RESPONSE_HEADERS].extend(added)
        return self.app(scope, receive, send)

    async def _answer_preflight(
        self,
        scope: Scope,
        send: Send,
        origin: bytes,
        method: bytes,
        requested: bytes | None,
    ) -> None:
        asked = [h.strip().lower() for h in (requested or b"").split(b",") if h.strip()]
        if (
            not self._allowed(origin)
            or method.strip() not in self._methods
            or not (self._any_header or all(h in self._headers for h in asked))
        ):
            await self._denied.send(send, scope["doma.request_id"], _VARY)
            return
        headers = [*self._origin_headers(origin), *self._preflight]
        if asked:
            # Echo what was asked: all of it is allowed (checked above), '*' included.
            headers.append((b"access-control-allow-headers", b", ".join(asked)))
        if not self._echo:
            headers.append((b"vary", b"Origin"))
        headers.append((b"content-length", b"0"))
        headers.append((b"x-request-id", scope["doma.request_id"].encode()))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def build(app: ASGIApp, settings: CorsSettings, context: ChainContext) -> ASGIApp:
    denied = Denial(context.resources.metrics, "cors", 403, "cors_preflight_denied")
    return CorsPolicy(app, settings=settings, denied=denied)


SPEC = PolicySpec(parse=parse, build=build)
