"""Errors raised by the authz package.

The tree::

    AuthzError
    ├── ConfigError            a routes file is wrong; carries file, line and column
    └── KeySourceError         keys could not be loaded (network, parse); the last good keys stay
"""

from __future__ import annotations

__all__ = ["AuthzError", "ConfigError", "KeySourceError"]


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
