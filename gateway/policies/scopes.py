"""Scopes and roles: the verified token must carry the route's scopes and one of its roles.

Scopes come from ``scope`` (space-separated, RFC 8693) or ``scp`` (a list, or a string); every
required scope must be present. Roles come from a configured claim, dotted for nested objects
(``realm_access.roles``); any one of the required roles suffices. A refusal is 403
``insufficient_scope`` with ``WWW-Authenticate: Bearer error="insufficient_scope"`` (RFC 6750).
The claims are those an auth policy earlier in the chain verified; without them nothing passes.
The outcome is remembered per claims object, which the core reuses for a repeated token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from authz.errors import ConfigError
from authz.yamlnodes import Node
from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.policies.auth import CLAIMS
from gateway.policies.denial import Denial
from gateway.policies.spec import ChainContext, PolicySpec

__all__ = ["SPEC", "ScopesPolicy", "ScopesSettings", "granted"]

_KEYS = ("scopes", "roles", "roles_claim")
_MEMO_SIZE = 8192


@dataclass(frozen=True, slots=True)
class ScopesSettings:
    scopes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    roles_claim: str = "roles"


def parse(node: Node | None, item: Node) -> ScopesSettings:
    if node is None:
        raise item.error("scopes needs settings, e.g. - scopes: {scopes: [scan.write]}")
    mapping = node.mapping(_KEYS)
    scopes = mapping.get("scopes")
    roles = mapping.get("roles")
    claim = mapping.get("roles_claim")
    settings = ScopesSettings(
        scopes=scopes.str_list() if scopes is not None else (),
        roles=roles.str_list() if roles is not None else (),
        roles_claim=claim.str() if claim is not None else "roles",
    )
    for value in (*settings.scopes, *settings.roles):
        if not value or any(c.isspace() for c in value):
            raise node.error(f"{value!r}: a scope or role is one word without spaces")
    if not settings.scopes and not settings.roles:
        raise node.error("scopes needs 'scopes', 'roles' or both")
    return settings


def _words(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list | tuple):
        return {item for item in value if isinstance(item, str)}
    return set()


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def granted(claims: Mapping[str, Any] | None, settings: ScopesSettings) -> bool:
    """Whether ``claims`` carry every required scope and, when roles are set, one of them."""
    if claims is None:
        return False
    if settings.scopes:
        held = _words(claims.get("scope")) | _words(claims.get("scp"))
        if not held.issuperset(settings.scopes):
            return False
    if settings.roles:
        roles = _words(_claim(claims, settings.roles_claim))
        if roles.isdisjoint(settings.roles):
            return False
    return True


class ScopesPolicy:
    def __init__(self, app: ASGIApp, *, settings: ScopesSettings, denial: Denial):
        self.app = app
        self._settings = settings
        self._denial = denial
        self._memo: dict[int, tuple[Mapping[str, Any], bool]] = {}

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        claims = scope.get(CLAIMS)
        ok: bool
        if claims is None:
            ok = False
        else:
            memo = self._memo.get(id(claims))
            if memo is not None and memo[0] is claims:
                ok = memo[1]
            else:
                ok = granted(claims, self._settings)
                if len(self._memo) >= _MEMO_SIZE:
                    self._memo.clear()
                self._memo[id(claims)] = (claims, ok)
        if not ok:
            return self._denial.send(send, scope["doma.request_id"])
        return self.app(scope, receive, send)


def build(app: ASGIApp, settings: ScopesSettings, context: ChainContext) -> ASGIApp:
    if "auth" not in context.before or context.route.auth == "bypass":
        raise ConfigError(
            f"route {context.label}: scopes needs an auth policy before it on a route that "
            "requires auth (the scopes come from the verified token)",
            file=context.route.source,
        )
    challenge = 'Bearer realm="doma-gateway", error="insufficient_scope"'
    if settings.scopes:
        challenge += f', scope="{" ".join(settings.scopes)}"'
    denial = Denial(
        context.resources.metrics,
        "scopes",
        403,
        "insufficient_scope",
        (("www-authenticate", challenge),),
    )
    return ScopesPolicy(app, settings=settings, denial=denial)


SPEC = PolicySpec(parse=parse, build=build)
