"""The URL forms of the revocation store and bus, parsed without importing a client library.

The loader validates URLs with these functions (so a typo fails at load time, with its line),
and the adapters build their clients from the parsed form.

Store (and Redis bus) URLs::

    memory://[NAME]                                  in this process; same NAME, same store
    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]       one Redis (rediss:// for TLS)
    unix://[[USER]:PASSWORD@]/PATH/redis.sock[?db=DB]
    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]
    redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]

Bus URLs additionally accept ``amqp://`` and ``amqps://`` (RabbitMQ, aio-pika's URL form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, unquote, urlsplit

__all__ = ["BUS_SCHEMES", "STORE_SCHEMES", "RedisUrl", "parse_redis_url", "redact", "url_problem"]

STORE_SCHEMES = ("memory", "redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
BUS_SCHEMES = (*STORE_SCHEMES, "amqp", "amqps")
_DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "redis+sentinel": 26379, "redis+cluster": 6379}


@dataclass(frozen=True, slots=True)
class RedisUrl:
    kind: Literal["single", "sentinel", "cluster"]
    # The URL as redis-py's from_url takes it (single), else None.
    url: str | None = None
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisUrl:
    """The parsed form of a Redis URL, or ValueError saying what is wrong (never the password)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected a URL such as redis://127.0.0.1:6379/0")
    if scheme in ("redis", "rediss", "unix"):
        parts = urlsplit(url)
        if scheme != "unix":
            _check_host(scheme, parts)
        if scheme == "unix" and not parts.path:
            raise ValueError("unix:// URL needs a socket path")
        return RedisUrl("single", url=url, tls=scheme == "rediss")
    if scheme not in ("redis+sentinel", "redis+cluster"):
        raise ValueError(f"unknown scheme {scheme!r}")
    netloc, _, path = rest.partition("/")
    path, _, _query = path.partition("?")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_host_port(item, _DEFAULT_PORTS[scheme]) for item in netloc.split(","))
    segments = [s for s in path.split("/") if s]
    if scheme == "redis+cluster":
        if segments:
            raise ValueError("redis+cluster:// takes no path: a cluster has only database 0")
        return RedisUrl("cluster", nodes=nodes, username=username, password=password)
    if not segments or len(segments) > 2:
        raise ValueError("redis+sentinel:// URL needs /SERVICE or /SERVICE/DB after the hosts")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"database must be a number, got {segments[1]!r}")
        db = int(segments[1])
    return RedisUrl(
        "sentinel",
        nodes=nodes,
        service=unquote(segments[0]),
        db=db,
        username=username,
        password=password,
    )


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    if not item:
        raise ValueError("empty host in the host list")
    if item.startswith("["):
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(f"missing host in {item!r}")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError(f"bad port {port!r} in {item!r}: a port is a number from 1 to 65535")
    return host, int(port) if port else default_port


def _check_host(scheme: str, parts: SplitResult) -> None:
    """ValueError unless a one-host URL names a host, and a port in range if any."""
    if not parts.hostname:
        raise ValueError(f"{scheme}:// URL needs a host")
    _host_port(parts.netloc.rpartition("@")[2], 0)


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``url`` is not usable with one of ``schemes``, or None."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in schemes:
        return f"expected a URL starting with one of: {', '.join(s + '://' for s in schemes)}"
    if scheme == "memory":
        return None if "/" not in rest and "@" not in rest else "memory:// takes only a name"
    if scheme in ("amqp", "amqps"):
        try:
            _check_host(scheme, urlsplit(url))
        except ValueError as exc:
            return str(exc)
        return None
    try:
        parse_redis_url(url)
    except ValueError as exc:
        return str(exc)
    return None


def redact(url: str) -> str:
    """``url`` with any password replaced, for logs and messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, tail = rest.partition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{tail}"
