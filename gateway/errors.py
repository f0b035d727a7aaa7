"""Errors raised by the gateway package; each carries the HTTP status the client receives.

The tree::

    GatewayError                 status, reason (a stable snake_case metric label)
    ├── InvalidPath              400  the request target is malformed or ambiguous
    ├── InvalidFraming           400  ambiguous body framing (Transfer-Encoding in HTTP/1.0)
    ├── MalformedRequest         400  the server could not parse the request, or its Host
    ├── RequestTimeout           408  a head or an announced body did not arrive in time
    ├── HeadersTooLarge          431  the request head passed gateway.max_request_head_bytes
    ├── UnsupportedCoding        501  a transfer coding before chunked
    ├── VersionNotSupported      505  an HTTP version other than 1.0 and 1.1
    ├── RouteNotFound            404  no domain, or no route of the domain, matches
    ├── VersionNotFound          404  the domain has no such version; lists the supported ones
    ├── MethodNotAllowed         405  a route matches the path but not the method; carries Allow
    ├── PayloadTooLarge          413  a streamed request body passed a route's max_body_bytes
    ├── VersionGone              410  the version is past its sunset date
    └── UpstreamError
        ├── BadGateway           502  the upstream answered with something that is not HTTP
        ├── UpstreamUnavailable  503  connection refused or reset, no endpoint left to try
        │   ├── CircuitOpen      503  the upstream's breaker is open; carries Retry-After
        │   └── UpstreamOverflow 503  max_requests already in flight; carries Retry-After
        └── UpstreamTimeout      504  connect, read or the total deadline expired

:class:`ResponseCutShort` is no GatewayError: it has no status to send, since the answer has
begun. Configuration errors are :class:`authz.errors.ConfigError` (file, line, column), shared
with authz.
"""

from __future__ import annotations

__all__ = [
    "CLIENT_GONE",
    "BadGateway",
    "CircuitOpen",
    "GatewayError",
    "HeadersTooLarge",
    "InvalidFraming",
    "InvalidPath",
    "MalformedRequest",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "RequestTimeout",
    "ResponseCutShort",
    "RouteNotFound",
    "UnsupportedCoding",
    "UpstreamError",
    "UpstreamOverflow",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "VersionGone",
    "VersionNotFound",
    "VersionNotSupported",
]

# The message of the cancellation of a request whose client left before its answer began: the
# server cancels the request's task, and the app ends it as a 499 instead of an error.
CLIENT_GONE = "client left before its answer"


class GatewayError(Exception):
    """Root of the errors the gateway turns into JSON responses."""

    status = 500
    error = "internal_error"

    def __init__(self, reason: str, *, headers: tuple[tuple[str, str], ...] = (), **fields: object):
        super().__init__(reason)
        self.reason = reason
        self.headers = headers
        self.fields = fields


class InvalidPath(GatewayError):
    status, error = 400, "bad_request"


class InvalidFraming(GatewayError):
    status, error = 400, "bad_request"


class MalformedRequest(GatewayError):
    status, error = 400, "bad_request"


class RequestTimeout(GatewayError):
    status, error = 408, "request_timeout"


class HeadersTooLarge(GatewayError):
    status, error = 431, "request_header_fields_too_large"


class UnsupportedCoding(GatewayError):
    status, error = 501, "not_implemented"


class VersionNotSupported(GatewayError):
    status, error = 505, "http_version_not_supported"


class RouteNotFound(GatewayError):
    status, error = 404, "not_found"


class VersionNotFound(GatewayError):
    status, error = 404, "not_found"


class MethodNotAllowed(GatewayError):
    status, error = 405, "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status, error = 413, "payload_too_large"


class VersionGone(GatewayError):
    status, error = 410, "gone"


class UpstreamError(GatewayError):
    status, error = 502, "bad_gateway"


class BadGateway(UpstreamError):
    status, error = 502, "bad_gateway"


class UpstreamUnavailable(UpstreamError):
    status, error = 503, "service_unavailable"


class CircuitOpen(UpstreamUnavailable):
    status, error = 503, "service_unavailable"


class UpstreamOverflow(UpstreamUnavailable):
    status, error = 503, "service_unavailable"


class UpstreamTimeout(UpstreamError):
    status, error = 504, "gateway_timeout"


class ResponseCutShort(Exception):
    """The upstream failed after the client's answer began (a reset, a read timeout): the
    gateway has logged why, and the server closes the client's connection without the answer's
    end, so the client cannot take the part for the whole."""
