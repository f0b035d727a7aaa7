"""The client's address: the peer, or the rightmost untrusted hop of ``X-Forwarded-For``.

``X-Forwarded-For`` is believed only as far as it was written by proxies we trust
(``gateway.trusted_proxies``): walking it from the right, every trusted hop appended the address
it saw, so the first hop that is not one of ours is the client. Anything further left was
written by the client itself and is spoofable (Kong rejected leftmost-XFF for this reason).
The result is computed once per request and kept in the scope for every policy that needs it.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.addresses import TrustedProxies
from gateway.asgi import Scope

__all__ = ["SCOPE_KEY", "ClientAddress"]

SCOPE_KEY = "doma.client_ip"


class ClientAddress:
    """Resolves the client address of a request against a fixed set of trusted proxies."""

    __slots__ = ("_proxies", "_trusted")

    def __init__(self, trusted: Iterable[str]):
        self._proxies = TrustedProxies(trusted)
        self._trusted = self._proxies.trusts

    def resolve(self, peer: str, forwarded_for: Iterable[bytes]) -> str:
        """The client address, as text; an unparseable hop is returned as is (it is untrusted)."""
        if not self._proxies or not self._trusted(peer):
            return peer
        hops = [
            hop.strip() for value in forwarded_for for hop in value.decode("latin-1").split(",")
        ]
        hops = [hop for hop in hops if hop]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        # Every hop is one of our proxies: the first of them met the client.
        return hops[0] if hops else peer

    def of(self, scope: Scope) -> str:
        """The client address of this request, computed once and kept in the scope."""
        known: str | None = scope.get(SCOPE_KEY)
        if known is not None:
            return known
        client = scope.get("client")
        peer = client[0] if client else ""
        if self._proxies and self._trusted(peer):
            values = [v for n, v in scope["headers"] if n == b"x-forwarded-for"]
            address = self.resolve(peer, values)
        else:
            address = peer
        scope[SCOPE_KEY] = address
        return address
