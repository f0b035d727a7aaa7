"""The inter-domain layer rule at the edge: a domain calling another through the gateway.

The caller is a domain only when something trustworthy says so: the ``X-Forwarded-Client-Cert``
header of a proxy in ``inter_domain.trusted_proxies`` (its last element's SPIFFE ``URI``, whose
namespace is the domain), else the ``inter_domain.token_claim`` of the service token an auth
policy earlier in the chain verified. The target is the route's own domain. The verdict comes
from the same :class:`~authz.inter_domain.InterDomainRule` ``doma-gateway authz`` applies, so
both modes refuse alike: 403 ``undeclared_dependency`` or ``layer_violation``, or, in ``report``
mode, a log line and a count only.

Every route gets this policy when ``inter_domain:`` is configured, right after auth and scopes
(DESIGN's order); a route may list ``inter_domain`` to place it elsewhere in its chain.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, get_args

from authz.domain_graph import Violation, caller_from_xfcc
from authz.errors import ConfigError
from authz.inter_domain import InterDomainRule
from authz.yamlnodes import Node
from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.policies.auth import CLAIMS
from gateway.policies.denial import Denial
from gateway.policies.spec import ChainContext, PolicySpec

__all__ = ["SPEC", "InterDomainPolicy"]

_XFCC = b"x-forwarded-client-cert"
REASONS: tuple[str, ...] = get_args(Violation)


class InterDomainPolicy:
    def __init__(
        self, app: ASGIApp, *, rule: InterDomainRule, target: str, denials: dict[str, Denial]
    ):
        self.app = app
        self._rule = rule
        self._target = target
        self._denials = denials
        settings = rule.settings
        self._trust_domain = settings.trust_domain
        self._claim = settings.token_claim
        networks = tuple(ipaddress.ip_network(c, strict=False) for c in settings.trusted_proxies)

        @lru_cache(maxsize=1024)
        def trusted(peer: str) -> bool:
            try:
                address = ipaddress.ip_address(peer)
            except ValueError:
                return False
            return any(address in network for network in networks)

        self._trusted = trusted if networks else None

    def caller(self, scope: Scope) -> str | None:
        if self._trusted is not None:
            client = scope.get("client")
            if client and self._trusted(client[0]):
                # Several lines are one value joined with ',': the last element is the one the
                # nearest (trusted) proxy appended, whichever line it came on.
                lines = [value for name, value in scope["headers"] if name == _XFCC]
                if lines:
                    joined = b",".join(lines).decode("latin-1")
                    found = caller_from_xfcc(joined, self._trust_domain)
                    if found is not None:
                        return found
        if self._claim is not None:
            claims: Mapping[str, Any] | None = scope.get(CLAIMS)
            value = claims.get(self._claim) if claims is not None else None
            if isinstance(value, str) and value:
                return value
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            caller = self.caller(scope)
            verdict = self._rule.judge(caller, self._target) if caller is not None else None
            if verdict is not None:
                await self._denials[verdict.reason].send(send, scope.get("doma.request_id", ""))
                return
        await self.app(scope, receive, send)


def parse(node: Node | None, item: Node) -> None:
    if node is not None:
        raise item.error(
            "inter_domain takes no settings here: the rule is configured once, in the "
            "top-level 'inter_domain:' section"
        )


def build(app: ASGIApp, settings: None, context: ChainContext) -> ASGIApp:
    rule = context.resources.inter_domain
    if rule is None:
        raise ConfigError(
            f"route {context.label} lists inter_domain, but no routes file has an "
            "'inter_domain:' section",
            file=context.route.source,
        )
    needs_token = rule.settings.token_claim is not None and context.route.auth != "bypass"
    if needs_token and "auth" not in context.before:
        raise ConfigError(
            f"route {context.label}: inter_domain must come after auth when "
            "inter_domain.token_claim is set (before auth there is no verified token, and a "
            "service token's caller would go unjudged)",
            file=context.route.source,
        )
    denials = {
        reason: Denial(context.resources.metrics, "inter_domain", 403, reason) for reason in REASONS
    }
    return InterDomainPolicy(app, rule=rule, target=context.domain.name, denials=denials)


SPEC = PolicySpec(parse=parse, build=build)
