"""Builds the runtime layer rule from the routes YAML for either command.

``doma-gateway authz`` has no routes of its own, but it reads the same files: the domain table
(layers, ``depends_on``) comes from the gateway's loader here, in the composition root, so the
authz package stays free of gateway imports and both commands judge calls by one graph.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from authz.check import Decider
from authz.inter_domain import DomainAwareAuthorizer, InterDomainRule
from authz.inter_domain_loader import load_inter_domain, no_domains
from authz.inter_domain_metrics import InterDomainMetrics
from doma_gateway.check_command import domain_graph
from doma_gateway.serve_command import has_section
from gateway.routes_loader import load_routes

__all__ = ["InterDomainMetrics", "inter_domain_rule", "with_inter_domain"]


def inter_domain_rule(routes: Path, metrics: InterDomainMetrics) -> InterDomainRule | None:
    """The rule when ``inter_domain:`` is configured, judged by every domain of ``routes``.

    Always the whole edge's domains, even for ``serve --domain``: a domain's own gateway must
    still know its callers' layers.
    """
    settings = load_inter_domain(routes)
    if settings is None:
        return None
    if not has_section(routes, "domains"):
        raise no_domains(settings)
    return InterDomainRule(domain_graph(load_routes(routes)), settings, metrics.observe)


def with_inter_domain(routes: Path, decider: Decider, registry: CollectorRegistry) -> Decider:
    """``decider`` judged by the layer rule for callers with a mesh identity, when configured."""
    rule = inter_domain_rule(routes, InterDomainMetrics(registry, "doma_authz"))
    return decider if rule is None else DomainAwareAuthorizer(decider, rule)
