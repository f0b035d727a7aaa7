"""Reads the ``inter_domain:`` section of the routes YAML into :class:`InterDomainSettings`.

The section switches the runtime layer rule on; the domains, layers and ``depends_on`` it checks
against are the routes YAML's own (see :mod:`authz.domain_graph`).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import yaml

from authz.errors import ConfigError
from authz.inter_domain import InterDomainSettings
from authz.loader import ROUTES_TOP_LEVEL_KEYS
from authz.yamlnodes import Node, load_documents

__all__ = [
    "INTER_DOMAIN_KEYS",
    "TRUST_DOMAIN",
    "load_inter_domain",
    "no_domains",
    "parse_inter_domain",
]

INTER_DOMAIN_KEYS = ("mode", "trust_domain", "trusted_proxies", "token_claim")
TRUST_DOMAIN = re.compile(r"^[a-z0-9._\-]+\Z")


def load_inter_domain(path: Path) -> InterDomainSettings | None:
    """The ``inter_domain:`` section under ``path``, or None when no file has one."""
    found: list[tuple[Node, Node]] = []
    for document in load_documents(path):
        top = document.mapping(ROUTES_TOP_LEVEL_KEYS)
        section = top.get("inter_domain")
        if section is not None:
            found.append((top.key("inter_domain"), section))
    if not found:
        return None
    if len(found) > 1:
        raise found[1][0].error(
            f"a second 'inter_domain:' section (the first is at {found[0][0].where})"
        )
    return parse_inter_domain(found[0][1])


def parse_inter_domain(node: Node) -> InterDomainSettings:
    section = node.mapping(INTER_DOMAIN_KEYS)
    defaults = InterDomainSettings()
    mode = defaults.mode
    if (n := section.get("mode")) is not None:
        mode = n.choice(("enforce", "report"))  # type: ignore[assignment]
    trust_domain = defaults.trust_domain
    if (n := section.get("trust_domain")) is not None:
        trust_domain = n.str()
        if trust_domain != "*" and not TRUST_DOMAIN.match(trust_domain):
            raise n.error(
                f"trust_domain {trust_domain!r} must be a SPIFFE trust domain like "
                "cluster.local ('*' accepts any)"
            )
    proxies: tuple[str, ...] = ()
    if (n := section.get("trusted_proxies")) is not None:
        proxies = n.str_list()
        items = n.items() if isinstance(n.raw, yaml.SequenceNode) else [n]
        for item, cidr in zip(items, proxies, strict=True):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise item.error(f"{cidr!r} is not an IP address or CIDR range") from exc
    claim = None
    if (n := section.get("token_claim")) is not None:
        claim = n.str()
        if not claim:
            raise n.error("token_claim must name a claim")
    return InterDomainSettings(
        mode=mode,
        trust_domain=None if trust_domain == "*" else trust_domain,
        trusted_proxies=proxies,
        token_claim=claim,
        source=node.where,
    )


def no_domains(settings: InterDomainSettings) -> ConfigError:
    """The rule needs a domain table: an ``inter_domain:`` without ``domains:`` is a mistake."""
    return ConfigError(
        "'inter_domain:' needs the domains it checks: add the 'domains:' and 'layers:' files",
        file=settings.source,
    )
