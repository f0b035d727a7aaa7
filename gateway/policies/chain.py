"""The one place a route's chain is assembled: domain policies, then the route's, in YAML order.

The effective list is the domain's ``policies:`` with the route's merged in (Kong's service and
route plugins): a route entry with the name of a domain entry replaces it in place, the others
follow in the route's order. A route that requires auth and lists no ``auth`` gets the
in-process one first. The list is then wrapped in reverse, so the YAML order is the execution
order (Starlette's ``build_middleware_stack``), inside a fixed outermost step that strips
identity and ``Connection``-named headers from the client's request on every route (security
rule 3).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping

from authz.errors import ConfigError
from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.errors import MethodNotAllowed
from gateway.headers import connection_named
from gateway.policies.auth import AuthPolicySettings
from gateway.policies.resources import PolicyResources
from gateway.policies.spec import ChainContext, PolicySpec
from gateway.routes_model import Domain, GatewaySettings, PolicyRef, Route, Version

__all__ = ["IdentityStrip", "build_chain", "check_order", "effective_policies"]

# Preflights carry no credentials: CORS must answer them before anything asks for a token.
_AFTER_CORS = ("auth", "scopes")


class PreflightGuard:
    """Innermost on a route without ``cors``: a CORS preflight matched by the method it asks
    about (see :mod:`gateway.app`) is refused 405 here instead of reaching the upstream as an
    ``OPTIONS`` the route does not allow."""

    def __init__(self, app: ASGIApp, *, allow: str):
        self.app = app
        self._allow = allow

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope.get("doma.preflight"):
            raise MethodNotAllowed("method_not_allowed", headers=(("allow", self._allow),))
        return self.app(scope, receive, send)


class IdentityStrip:
    """The fixed outermost step: what the client may never hand the rest of the chain.

    Identity headers are removed in every spelling a backend may fold into theirs: any mix of
    ``-`` and ``_`` (``x-user-id``, ``x_user_id``, ``x-user_id``...; WSGI and CGI read them all
    as ``HTTP_X_USER_ID``). So are ``Connection`` and every header it names: those are for this
    hop only (RFC 9110 7.6.1), and removing them here, before any policy adds a header, means a
    client listing ``x-user-id`` in ``Connection`` cannot make the proxy drop the identity auth
    sets (Traefik CVE-2021-32813, CVE-2024-45410).
    """

    def __init__(self, app: ASGIApp, *, names: tuple[bytes, ...]):
        self.app = app
        self._names = frozenset((*names, b"connection"))
        # Each identity name with '_' read as '-', for the spellings that mix the two.
        self._folded = frozenset(n.replace(b"_", b"-") for n in names)

    def _stripped(self, name: bytes) -> bool:
        return name in self._names or (b"_" in name and name.replace(b"_", b"-") in self._folded)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            headers = scope["headers"]
            names, folded = self._names, self._folded
            for name, _ in headers:
                # Inline: this scan runs for every request, the rebuild below almost never.
                if name in names or (b"_" in name and name.replace(b"_", b"-") in folded):
                    stripped = self._stripped
                    named = connection_named(headers)
                    scope["headers"] = [
                        (n, v) for n, v in headers if n not in named and not stripped(n)
                    ]
                    break
        return self.app(scope, receive, send)


def effective_policies(
    domain: Domain, version: Version, route: Route
) -> list[tuple[PolicyRef, str]]:
    """The route's chain as (policy, owner) pairs, outermost first."""
    domain_owner = domain.name
    route_owner = f"{domain.name}:{version.name}:{route.name}"
    chain: list[tuple[PolicyRef, str]] = [(ref, domain_owner) for ref in domain.policies]
    for ref in route.policies:
        for index, (existing, _) in enumerate(chain):
            if existing.name == ref.name:
                chain[index] = (ref, route_owner)
                break
        else:
            chain.append((ref, route_owner))
    if route.auth == "required" and all(ref.name != "auth" for ref, _ in chain):
        chain.insert(0, (PolicyRef("auth", AuthPolicySettings(), route.source), route_owner))
    return chain


def _inter_domain_at(chain: list[tuple[PolicyRef, str]]) -> int:
    """Where the layer rule goes unless listed: after auth and scopes (DESIGN's order)."""
    after = ("cors", "auth", "scopes")
    return max((i + 1 for i, (ref, _) in enumerate(chain) if ref.name in after), default=0)


def check_order(
    domain: Domain,
    version: Version,
    route: Route,
    chain: list[tuple[PolicyRef, str]] | None = None,
) -> None:
    """The order rules of a chain, checked when the routes load (so ``check`` reports them)."""
    if chain is None:
        chain = effective_policies(domain, version, route)
    names = tuple(ref.name for ref, _ in chain)
    label = f"route {domain.name} {version.name} {route.name}"
    if "cors" in names:
        cors_at = names.index("cors")
        for name in _AFTER_CORS:
            if name in names[:cors_at]:
                raise ConfigError(
                    f"{label}: cors must come before {name} "
                    "(a browser's preflight carries no credentials)",
                    file=chain[cors_at][0].source or route.source,
                )
    if "scopes" in names:
        scopes_at = names.index("scopes")
        if "auth" not in names[:scopes_at] or route.auth == "bypass":
            raise ConfigError(
                f"{label}: scopes needs an auth policy before it on a route that requires auth "
                "(the scopes come from the verified token)",
                file=chain[scopes_at][0].source or route.source,
            )
    if route.auth != "bypass" and "auth" in names:
        auth_at = names.index("auth")
        for ref, _ in chain[:auth_at]:
            if ref.name == "rate_limit" and getattr(ref.settings, "limit_by", None) == "user":
                raise ConfigError(
                    f"{label}: a rate_limit by user must come after auth "
                    "(before it there is no user yet, and every client would share the limit "
                    "of its address)",
                    file=ref.source or route.source,
                )


def build_chain(
    endpoint: ASGIApp,
    *,
    domain: Domain,
    version: Version,
    route: Route,
    gateway: GatewaySettings,
    resources: PolicyResources,
    policies: Mapping[str, PolicySpec],
) -> ASGIApp:
    chain = effective_policies(domain, version, route)
    if resources.inter_domain is not None and all(ref.name != "inter_domain" for ref, _ in chain):
        at = _inter_domain_at(chain)
        chain.insert(at, (PolicyRef("inter_domain", None, route.source), domain.name))
    names = tuple(ref.name for ref, _ in chain)
    check_order(domain, version, route, chain)
    identity = _identity_spellings(chain, resources)
    app = endpoint
    if "cors" not in names:
        methods = route.methods
        allow = (
            ", ".join(sorted(methods | {"HEAD"} if "GET" in methods else methods))
            if methods
            else ""
        )
        app = PreflightGuard(app, allow=allow)
    for index in range(len(chain) - 1, -1, -1):
        ref, owner = chain[index]
        spec = policies.get(ref.name)
        if spec is None:
            raise ConfigError(f"unknown policy {ref.name!r}", file=ref.source or route.source)
        context = ChainContext(
            domain, version, route, gateway, resources,
            before=names[:index], owner=owner, identity=identity,
            source=ref.source or route.source,
        )  # fmt: skip
        app = spec.build(app, ref.settings, context)
    return IdentityStrip(app, names=identity)


def _identity_spellings(
    chain: list[tuple[PolicyRef, str]], resources: PolicyResources
) -> tuple[bytes, ...]:
    """The headers auth sets on this chain, from the ``auth:`` section or a remote ext-authz
    server, in their dash and underscore spellings."""
    identity = dict.fromkeys(resources.identity_spellings)
    for ref, _ in chain:
        ext_authz = getattr(ref.settings, "ext_authz", None) if ref.name == "auth" else None
        for header in ext_authz.identity_headers if ext_authz is not None else ():
            identity.update(dict.fromkeys((header.encode(), header.replace("-", "_").encode())))
    return tuple(identity)
