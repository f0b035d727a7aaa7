"""DOMA's layer rule as pure data: which domain may call which.

The same :class:`DomainGraph` answers ``doma-gateway check`` (declared dependencies), the ext-authz
server and the edge gateway (calls seen at runtime), so the rule cannot differ between them. The
composition root builds it from the routes YAML; nothing here reads files or speaks a protocol.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DomainGraph",
    "DomainNode",
    "Violation",
    "caller_from_spiffe",
    "caller_from_xfcc",
    "target_domain",
]

Violation = Literal["undeclared_dependency", "layer_violation"]

# Same shape as the routes loader's version names: /api/{version}/{domain} or /api/{domain}.
_VERSION = re.compile(r"^v[0-9][0-9a-z.\-]*\Z")
_SPIFFE = re.compile(r"^spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)\Z")


@dataclass(frozen=True, slots=True)
class DomainNode:
    name: str
    layer: str
    depends_on: tuple[str, ...] = ()


class DomainGraph:
    """Domains, their layers (lowest first) and declared dependencies."""

    __slots__ = ("_declared", "_rank", "layers", "nodes")

    def __init__(self, layers: Iterable[str], nodes: Iterable[DomainNode]):
        self.layers = tuple(layers)
        self.nodes = {node.name: node for node in nodes}
        self._rank = {layer: index for index, layer in enumerate(self.layers)}
        self._declared = {
            (node.name, dep) for node in self.nodes.values() for dep in node.depends_on
        }

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def rank(self, domain: str) -> int:
        return self._rank[self.nodes[domain].layer]

    def violation(self, caller: str, target: str) -> Violation | None:
        """Why ``caller`` may not call ``target``; None when it may (or either is no domain).

        Going up the layers is reported first: it is the graver fault, and it stays one even if
        someone declared the dependency.
        """
        if caller == target or caller not in self.nodes or target not in self.nodes:
            return None
        if self.rank(target) > self.rank(caller):
            return "layer_violation"
        if (caller, target) not in self._declared:
            return "undeclared_dependency"
        return None

    def dependents(self, target: str) -> tuple[str, ...]:
        """The domains that declare a dependency on ``target``, in declaration order."""
        return tuple(n.name for n in self.nodes.values() if target in n.depends_on)

    def cycle(self) -> list[str] | None:
        """One dependency cycle as ``[a, b, ..., a]``, or None when the graph has none."""
        visiting: list[str] = []
        done: set[str] = set()

        def visit(name: str) -> list[str] | None:
            if name in done or name not in self.nodes:
                return None
            if name in visiting:
                return [*visiting[visiting.index(name) :], name]
            visiting.append(name)
            for dep in self.nodes[name].depends_on:
                found = visit(dep)
                if found is not None:
                    return found
            visiting.pop()
            done.add(name)
            return None

        for name in self.nodes:
            found = visit(name)
            if found is not None:
                return found
        return None


def caller_from_spiffe(principal: str, trust_domain: str | None) -> str | None:
    """The namespace (= calling domain) of ``spiffe://<td>/ns/<ns>/sa/<sa>``; None otherwise.

    A principal from another trust domain names nobody here: its namespaces are not ours.
    """
    found = _SPIFFE.match(principal)
    if found is None or (trust_domain is not None and found.group(1) != trust_domain):
        return None
    return found.group(2)


def caller_from_xfcc(header: str, trust_domain: str | None) -> str | None:
    """The calling domain from an ``X-Forwarded-Client-Cert`` value set by a trusted proxy.

    Each proxy hop appends an element (``,``-separated); the last one describes the client the
    nearest proxy saw, which is the only one that proxy vouches for. Several header lines are
    one value joined with ``,`` (RFC 9110 5.3), so the last line's last element counts. Values
    may be quoted and hold ``,`` ``;`` ``=`` (a certificate's Subject does): a quoted part
    never splits an element, and a value that cannot be read names no caller.
    """
    elements = _xfcc_elements(header)
    if not elements:
        return None
    uris = [value for key, value in elements[-1] if key.lower() == "uri"]
    if len(uris) != 1:
        return None
    return caller_from_spiffe(uris[0], trust_domain)


def _xfcc_elements(header: str) -> list[list[tuple[str, str]]] | None:
    """Elements of ``key=value;key=value,...`` with Envoy's quoting (``"..."``, ``\\"``)."""
    elements: list[list[tuple[str, str]]] = [[]]
    key, value, in_key, index = "", "", True, 0
    while index < len(header):
        char = header[index]
        if char == '"' and not in_key and not value.strip():
            closing = index + 1
            quoted = []
            while closing < len(header) and header[closing] != '"':
                if header[closing] == "\\" and closing + 1 < len(header):
                    closing += 1
                quoted.append(header[closing])
                closing += 1
            if closing >= len(header):
                return None  # an unterminated quote
            value, index = "".join(quoted), closing + 1
            continue
        if char == "=" and in_key:
            in_key = False
        elif char in ";,":
            if key.strip() or value:
                if in_key:
                    return None  # a part without '='
                elements[-1].append((key.strip(), value.strip() if value else ""))
            key, value, in_key = "", "", True
            if char == ",":
                elements.append([])
        elif in_key:
            key += char
        else:
            value += char
        index += 1
    if key.strip() or value:
        if in_key:
            return None
        elements[-1].append((key.strip(), value.strip()))
    return [element for element in elements if element]


def target_domain(path: str) -> str | None:
    """The domain a normalized ``/api/{version}/{domain}/...`` or ``/api/{domain}/...`` names."""
    if not path.startswith("/api/"):
        return None
    first, _, rest = path[5:].partition("/")
    if _VERSION.match(first):
        first = rest.partition("/")[0]
    return first or None
