"""Header rules per route: add (overwrite), remove and rename on the request; add and remove
on the response. Envoy's ``request_headers_to_add``/``_to_remove`` and Kong's
request-transformer in one place.

Order on the request: rename, remove, then add. The gateway's own headers (hop-by-hop,
``host``, ``content-length``, ``x-forwarded-*``, ``x-request-id``) cannot be named, and no rule
may write an identity header (a ``claims_to_headers`` target, or one of an ``ext_authz``
policy's ``identity_headers``, in any ``-``/``_`` spelling): a rename into one would hand the
upstream an identity the client chose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz.errors import ConfigError
from authz.yamlnodes import Node
from gateway.asgi import ASGIApp, Message, Receive, Scope, Send
from gateway.headers import HOP_BY_HOP
from gateway.policies.spec import ChainContext, PolicySpec, header_name

__all__ = ["SPEC", "HeaderRules", "HeadersPolicy", "HeadersSettings", "rewrite_request"]

_SIDES = ("request", "response")
_REQUEST_KEYS = ("add", "remove", "rename")
_RESPONSE_KEYS = ("add", "remove")
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*\Z")
_RESERVED = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",
}
Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class HeaderRules:
    add: Pairs = ()
    remove: tuple[str, ...] = ()
    rename: Pairs = ()


@dataclass(frozen=True, slots=True)
class HeadersSettings:
    request: HeaderRules = HeaderRules()
    response: HeaderRules = HeaderRules()


def _name(node: Node) -> str:
    name = header_name(node)
    if name.encode() in _RESERVED:
        raise node.error(f"{name!r} is set by the gateway itself and cannot be changed here")
    return name


def _pairs(node: Node | None, *, value_is_name: bool) -> Pairs:
    if node is None:
        return ()
    out = []
    for key, value in node.entries("header: value"):
        text = _name(value) if value_is_name else value.str()
        if not value_is_name and not _VALUE.match(text):
            raise value.error("a header value cannot hold control characters or line breaks")
        out.append((_name(key), text))
    return tuple(out)


def _rules(node: Node | None, keys: tuple[str, ...]) -> HeaderRules:
    if node is None:
        return HeaderRules()
    m = node.mapping(keys)
    remove = m.get("remove")
    items = remove.items() if remove is not None else []
    return HeaderRules(
        add=_pairs(m.get("add"), value_is_name=False),
        remove=tuple(_name(item) for item in items),
        rename=_pairs(m.get("rename"), value_is_name=True),
    )


def parse(node: Node | None, item: Node) -> HeadersSettings:
    if node is None:
        raise item.error("headers needs request or response rules, e.g. {request: {remove: [x]}}")
    m = node.mapping(_SIDES)
    return HeadersSettings(
        _rules(m.get("request"), _REQUEST_KEYS), _rules(m.get("response"), _RESPONSE_KEYS)
    )


def rewrite_request(
    headers: list[tuple[bytes, bytes]],
    rename: dict[bytes, bytes],
    drop: frozenset[bytes],
    add: tuple[tuple[bytes, bytes], ...],
) -> list[tuple[bytes, bytes]]:
    out = [(rename.get(n, n), v) for n, v in headers]
    out = [(n, v) for n, v in out if n not in drop]
    out.extend(add)
    return out


class HeadersPolicy:
    def __init__(self, app: ASGIApp, *, settings: HeadersSettings):
        self.app = app
        request, response = settings.request, settings.response
        self._rename = {a.encode(): b.encode() for a, b in request.rename}
        self._add = tuple((n.encode(), v.encode("latin-1")) for n, v in request.add)
        # Added headers overwrite: drop the client's values of those names first.
        self._drop = frozenset({n.encode() for n in request.remove} | {n for n, _ in self._add})
        self._request = bool(self._rename or self._drop)
        self._response_add = tuple((n.encode(), v.encode("latin-1")) for n, v in response.add)
        self._response_drop = frozenset(
            {n.encode() for n in response.remove} | {n for n, _ in self._response_add}
        )
        self._response = bool(self._response_drop)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._request:
            scope["headers"] = rewrite_request(
                scope["headers"], self._rename, self._drop, self._add
            )
        if not self._response:
            await self.app(scope, receive, send)
            return
        drop, add = self._response_drop, self._response_add

        async def rewritten(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(n, v) for n, v in message["headers"] if n.lower() not in drop]
                message["headers"] = [*kept, *add]
            await send(message)

        await self.app(scope, receive, rewritten)


def build(app: ASGIApp, settings: HeadersSettings, context: ChainContext) -> ASGIApp:
    # Compared with every '_' as '-': a backend folding one into the other reads x_user-id as
    # x-user-id (and both as HTTP_X_USER_ID).
    identity = {n.replace(b"_", b"-") for n in context.identity}
    written = [("request.add", n) for n, _ in settings.request.add]
    written += [("request.rename", to) for _, to in settings.request.rename]
    for field, name in written:
        if name.replace("_", "-").encode() in identity:
            raise ConfigError(
                f"route {context.label}: header rules may not write the identity header "
                f"{name!r} ({field}; only auth sets it)",
                file=context.source,
            )
    return HeadersPolicy(app, settings=settings)


SPEC = PolicySpec(parse=parse, build=build)
