"""IP addresses as the gateway reads them from peers and forwarded hops, and which are trusted.

One reading for everything that judges an address: the client-address resolution of the
policies and the ``X-Forwarded-*`` headers the proxy writes. On a dual-stack listener an IPv4
peer appears as ``::ffff:a.b.c.d``; read as IPv4 here, it matches ``trusted_proxies`` and IP
rules written for IPv4 in both places, so they never disagree about who is a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["IPAddress", "TrustedProxies", "address_text", "parse_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8192)
def parse_address(text: str) -> IPAddress | None:
    """An address from a peer or a forwarded hop (port and brackets tolerated; IPv4-mapped IPv6
    read as IPv4), else None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=8192)
def address_text(text: str) -> str:
    """``text`` as the address it reads as (``::ffff:10.0.0.1`` as ``10.0.0.1``), else as is."""
    address = parse_address(text)
    return text if address is None else str(address)


class TrustedProxies:
    """``gateway.trusted_proxies``: whether an address, as text, is one of them."""

    __slots__ = ("_networks", "trusts")

    def __init__(self, cidrs: Iterable[str]):
        self._networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)
        # Per address text: a busy proxy is asked about over and over.
        self.trusts = lru_cache(maxsize=8192)(self._trusts)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def _trusts(self, text: str) -> bool:
        address = parse_address(text)
        return address is not None and any(address in network for network in self._networks)
