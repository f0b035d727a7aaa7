"""``HOST:PORT`` command-line addresses."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

__all__ = ["HostPort", "host_port", "listening_on"]


class HostPort(tuple[str, int]):
    __slots__ = ()

    def __new__(cls, host: str, port: int) -> HostPort:
        return super().__new__(cls, (host, port))

    @property
    def host(self) -> str:
        return self[0]

    @property
    def port(self) -> int:
        return self[1]

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def host_port(text: str) -> HostPort:
    """Parse ``HOST:PORT`` or ``[V6]:PORT`` (an argparse type)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return HostPort(host, int(port))


@contextlib.contextmanager
def listening_on(what: str, address: HostPort) -> Iterator[None]:
    """Name the listener and its address in a failure to bind it (``error: cannot listen on
    127.0.0.1:8080 (the gateway): Address already in use``, not a bare errno)."""
    try:
        yield
    except OSError as exc:
        # The system's words for the errno: asyncio wraps them in a sentence of its own.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(f"cannot listen on {address} ({what}): {reason}") from None
