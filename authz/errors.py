"""Errors raised by the authz package.

The tree::

    AuthzError
    ├── ConfigError            a routes file is wrong; carries file, line and column
    ├── KeySourceError         keys could not be loaded (network, parse); the last good keys stay
    └── RevocationError
        ├── InvalidRevocation  a revoke request is wrong (bad id, no exp); nothing stored
        │   └── AlreadyExpired the token expired already: refused anyway, nothing stored
        ├── StoreUnavailable   the revocation store cannot answer (down, timeout, breaker open)
        └── BusError           the invalidation bus is unreachable or the connection was lost
"""

from __future__ import annotations

__all__ = [
    "AlreadyExpired",
    "AuthzError",
    "BusError",
    "ConfigError",
    "InvalidRevocation",
    "KeySourceError",
    "RevocationError",
    "StoreUnavailable",
]


class AuthzError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(AuthzError):
    """A configuration error that points at the offending place: ``file:line:column: message``."""

    def __init__(self, message: str, *, file: str = "<config>", line: int = 0, column: int = 0):
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{self.file}: {self.message}"


class KeySourceError(AuthzError):
    """Keys could not be fetched or parsed. Never carries key material or tokens."""


class RevocationError(AuthzError):
    """Revocation could not be done or checked. Never carries a token or a store password."""


class InvalidRevocation(RevocationError):
    """A revoke request that cannot be honoured as asked; nothing was stored."""


class AlreadyExpired(InvalidRevocation):
    """The token to revoke has expired already; it is refused without a revocation."""


class StoreUnavailable(RevocationError):
    """The revocation store did not answer (connection refused, timeout, circuit breaker open)."""


class BusError(RevocationError):
    """The invalidation bus could not be reached, or its connection was lost."""
