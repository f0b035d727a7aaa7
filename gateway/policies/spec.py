"""What every policy module provides: a settings parser and a builder, and what a builder gets.

A policy's settings are parsed once, at load time, into a frozen object (errors carry
``file:line:column``), so ``doma-gateway check`` refuses a wrong setting before anything runs.
The builder wraps one ASGI app per route; whatever it can compute ahead (header tuples,
compiled patterns, bound metric children) it computes there, so a request only branches.

A policy that decides without waiting has a plain ``__call__`` that returns the awaitable of
whatever answers the request: the next app's, or its denial's. Awaiting it is the same as
awaiting an ``async def __call__``, but the request's task then runs one coroutine frame fewer
per policy, on every step and every resumption (the chain is as deep as its policy list).
Work that must wait (a Redis bucket, a token not yet verified) goes to an ``async`` helper.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from authz.yamlnodes import Node
from gateway.asgi import ASGIApp

if TYPE_CHECKING:
    from gateway.policies.resources import PolicyResources
    from gateway.routes_model import Domain, GatewaySettings, Route, Version

__all__ = ["ChainContext", "PolicySpec", "header_name", "header_names", "listed", "method_names"]

# An HTTP token (RFC 9110 5.6.2): what a field name or a method may be made of.
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")


def listed(node: Node) -> list[Node]:
    """The items of a list, or the one scalar written in its place (as ``Node.str_list``)."""
    return [node] if isinstance(node.raw, yaml.ScalarNode) and not node.is_null() else node.items()


def _token(node: Node, text: str, what: str) -> str:
    if not _TOKEN.match(text):
        raise node.error(f"{text!r} is not {what}")
    return text


def header_name(node: Node) -> str:
    """One header name, lower-cased."""
    return _token(node, node.str().lower(), "a header name")


def header_names(node: Node, *, star: bool = False) -> tuple[str, ...]:
    """One header name or a list of them, lower-cased; ``*`` too when ``star`` allows it."""
    return tuple("*" if star and item.str() == "*" else header_name(item) for item in listed(node))


def method_names(node: Node) -> tuple[str, ...]:
    """One method or a list of them, upper-cased."""
    return tuple(_token(item, item.str().upper(), "an HTTP method") for item in listed(node))


@dataclass(frozen=True, slots=True)
class ChainContext:
    """The route a chain is built for, the policies before this one, and the shared resources."""

    domain: Domain
    version: Version
    route: Route
    gateway: GatewaySettings
    resources: PolicyResources
    # Names of the policies that run before this one in the chain (outermost first).
    before: tuple[str, ...] = ()
    # Who defined the policy: "scan" for a domain's chain, "scan:v1:results" for a route's.
    # State that outlives a request (rate-limit buckets) is kept per owner.
    owner: str = ""
    # The identity headers of this chain (what auth sets: claims_to_headers targets, ext_authz
    # identity_headers), in their '-' and '_' spellings: no other policy may write them.
    identity: tuple[bytes, ...] = ()
    # file:line of the policy's entry, for errors found while building it.
    source: str = ""

    @property
    def label(self) -> str:
        return f"{self.domain.name} {self.version.name} {self.route.name}"


@dataclass(frozen=True, slots=True)
class PolicySpec:
    # (settings, list item): settings is None when the policy is listed by name alone.
    parse: Callable[[Node | None, Node], Any]
    build: Callable[[ASGIApp, Any, ChainContext], ASGIApp]
