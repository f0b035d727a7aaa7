"""IP allow and deny lists (CIDR), judged on the client address resolved through
``gateway.trusted_proxies`` (the rightmost untrusted ``X-Forwarded-For`` hop), never on a
header the client wrote itself. A deny entry wins over an allow entry; with an allow list,
every other address is refused. Refusals are 403 ``ip_denied`` or ``ip_not_allowed``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from authz.yamlnodes import Node
from gateway.addresses import parse_address
from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.policies.client_ip import ClientAddress
from gateway.policies.denial import Denial
from gateway.policies.spec import ChainContext, PolicySpec

__all__ = ["SPEC", "IpRestrictionPolicy", "IpRestrictionSettings", "verdict"]

_KEYS = ("allow", "deny")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class IpRestrictionSettings:
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


def _cidrs(node: Node | None) -> tuple[str, ...]:
    if node is None:
        return ()
    values = node.str_list()
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise node.error(f"{value!r} is not an IP address or CIDR range") from exc
    return values


def parse(node: Node | None, item: Node) -> IpRestrictionSettings:
    if node is None:
        raise item.error("ip_restriction needs allow, deny or both (CIDR lists)")
    m = node.mapping(_KEYS)
    settings = IpRestrictionSettings(_cidrs(m.get("allow")), _cidrs(m.get("deny")))
    if not settings.allow and not settings.deny:
        raise node.error("ip_restriction needs allow, deny or both (CIDR lists)")
    return settings


def verdict(address: str, allow: tuple[Network, ...], deny: tuple[Network, ...]) -> str | None:
    """The deny reason for ``address``, or None when it may pass."""
    parsed = parse_address(address)
    if parsed is None:
        return "ip_not_allowed" if allow else None
    if any(parsed in network for network in deny):
        return "ip_denied"
    if allow and not any(parsed in network for network in allow):
        return "ip_not_allowed"
    return None


class IpRestrictionPolicy:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: IpRestrictionSettings,
        client_address: ClientAddress,
        denials: dict[str, Denial],
    ):
        self.app = app
        self._address = client_address
        self._denials = denials
        allow = tuple(ipaddress.ip_network(c, strict=False) for c in settings.allow)
        deny = tuple(ipaddress.ip_network(c, strict=False) for c in settings.deny)
        self._verdict = lru_cache(maxsize=8192)(lambda address: verdict(address, allow, deny))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reason = self._verdict(self._address.of(scope))
        if reason is not None:
            await self._denials[reason].send(send, scope["doma.request_id"])
            return
        await self.app(scope, receive, send)


def build(app: ASGIApp, settings: IpRestrictionSettings, context: ChainContext) -> ASGIApp:
    resources = context.resources
    denials = {
        reason: Denial(resources.metrics, "ip_restriction", 403, reason)
        for reason in ("ip_denied", "ip_not_allowed")
    }
    return IpRestrictionPolicy(
        app,
        settings=settings,
        client_address=resources.client_address(context.gateway.trusted_proxies),
        denials=denials,
    )


SPEC = PolicySpec(parse=parse, build=build)
