"""Which request and response headers cross the proxy, and the ones the gateway adds.

Hop-by-hop headers (RFC 9110 7.6.1) and every header named in ``Connection`` stay on their hop.
The headers the gateway sets itself (``X-Forwarded-*``, ``x-request-id``) are appended after that
filtering, so a client listing them in ``Connection`` cannot make the gateway drop its own
(Traefik CVE-2021-32813, CVE-2024-45410).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable

from gateway.addresses import TrustedProxies, address_text

__all__ = [
    "HOP_BY_HOP",
    "ForwardedFor",
    "connection_named",
    "is_field",
    "is_field_value",
    "request_id",
    "strip_request_headers",
    "strip_response_headers",
]

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the gateway from what it knows, never copied from the client.
_REPLACED_ON_REQUEST = frozenset(
    {
        b"host",
        b"content-length",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        # The gateway's server already answered 100-continue to the client when it read the body.
        b"expect",
    }
)
_DROPPED_REQUEST = HOP_BY_HOP | _REPLACED_ON_REQUEST
# What a proxy in front says about the client's TLS certificate: passed on only from a trusted
# proxy, or any client could claim to be another service to the next hop (Envoy's SANITIZE).
_DROPPED_FROM_UNTRUSTED_PEERS = _DROPPED_REQUEST | {b"x-forwarded-client-cert"}
_DROPPED_RESPONSE = HOP_BY_HOP | {b"content-length", b"x-request-id"}
# Generated ids are a random per-process prefix and a counter: unique across instances and
# restarts without a random draw per request (ids name requests; they are not secrets).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}\Z")
# RFC 9110 5.6.2 and 5.5: a field name is a token; a value holds no control character but HTAB
# (a CR or LF would end the line and start a header, or a request, of the sender's choosing).
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_IN_FIELD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def is_field_value(value: bytes) -> bool:
    """Whether ``value`` can be written as a header's value as it is."""
    return _NOT_IN_FIELD_VALUE.search(value) is None


def is_field(name: bytes, value: bytes) -> bool:
    """Whether ``name: value`` can be written as one header line as it is."""
    return _FIELD_NAME.fullmatch(name) is not None and is_field_value(value)


# Never removed for being named in Connection: Host is no hop-by-hop field (dropping it would
# cost the upstream X-Forwarded-Host and a preserved Host), and the framing fields say whether
# the request has a body: the proxy reads them to forward the body, and frames it afresh itself.
_NOT_CONNECTION_OPTIONS = (b"host", b"content-length", b"transfer-encoding")
# On a request, neither are the X-Forwarded-* fields: they are meant for this hop, the gateway,
# which reads a trusted proxy's (the client address of the IP rules and rate limits) and writes
# the upstream's afresh anyway. Dropped, a client whose proxy passes its Connection on could
# hide itself behind the proxy's own address.
_NOT_REQUEST_CONNECTION_OPTIONS = (
    *_NOT_CONNECTION_OPTIONS,
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
)


def connection_named(
    headers: Iterable[tuple[bytes, bytes]], *, request: bool = True
) -> frozenset[bytes]:
    """Header names listed in every ``Connection`` header (lower-cased), except ``host``, the
    framing fields and, on a ``request``, ``X-Forwarded-*``."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(token.strip().lower() for token in value.split(b",") if token.strip())
    names.difference_update(_NOT_REQUEST_CONNECTION_OPTIONS if request else _NOT_CONNECTION_OPTIONS)
    return frozenset(names)


def strip_request_headers(headers: RawHeaders, *, trusted_peer: bool = False) -> RawHeaders:
    """The client's headers to pass on; ``trusted_peer``: the peer is a trusted proxy."""
    named = connection_named(headers) if any(name == b"connection" for name, _ in headers) else ()
    dropped = _DROPPED_REQUEST if trusted_peer else _DROPPED_FROM_UNTRUSTED_PEERS
    return [(n, v) for n, v in headers if n not in dropped and n not in named]


def strip_response_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[RawHeaders, int | None]:
    """The response headers to pass on, and the upstream's Content-Length (None if absent)."""
    lowered = [(name.lower(), value) for name, value in headers]
    length: int | None = None
    connection = False
    for name, value in lowered:
        if name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"connection":
            connection = True
    named = connection_named(lowered, request=False) if connection else ()
    kept = [(n, v) for n, v in lowered if n not in _DROPPED_RESPONSE and n not in named]
    return kept, length


def request_id(headers: RawHeaders) -> str:
    """The client's ``x-request-id`` when it is a sane token, otherwise a fresh one."""
    for name, value in headers:
        if name == b"x-request-id" and _REQUEST_ID.match(value):
            return value.decode("ascii")
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


class ForwardedFor:
    """Builds ``X-Forwarded-For``/``-Proto``: extended only when the peer is a trusted proxy,
    judged as the policies' client address judges it (:mod:`gateway.addresses`)."""

    __slots__ = ("_proxies",)

    def __init__(self, trusted: Iterable[str]):
        self._proxies = TrustedProxies(trusted)

    def trusted(self, peer: str) -> bool:
        return bool(self._proxies) and self._proxies.trusts(peer)

    def headers(
        self, client_headers: RawHeaders, peer: str, scheme: str, host: bytes, *, trusted: bool
    ) -> RawHeaders:
        """``trusted``: what :meth:`trusted` said of ``peer`` (the proxy asks once per request)."""
        # The peer as the IP rules read it: an IPv4 client of a dual-stack listener as IPv4.
        forwarded_for = address_text(peer).encode()
        proto = scheme.encode()
        if trusted:
            prior = [v for n, v in client_headers if n == b"x-forwarded-for"]
            if prior:
                forwarded_for = b", ".join([*prior, forwarded_for])
            given = [v for n, v in client_headers if n == b"x-forwarded-proto"]
            if given:
                proto = given[-1]
        out = [(b"x-forwarded-for", forwarded_for), (b"x-forwarded-proto", proto)]
        if host:
            out.append((b"x-forwarded-host", host))
        return out
