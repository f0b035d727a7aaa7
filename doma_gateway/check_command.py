"""The governance half of ``doma-gateway check``: what a file may load with but must not ship.

Findings print as ``file:line:column: message`` on stderr, all of them, so one run shows every
fix needed; any finding makes ``check`` exit 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from authz.domain_graph import DomainGraph, DomainNode
from authz.errors import ConfigError
from authz.inter_domain_loader import load_inter_domain, no_domains
from gateway.extensions.host import ExtensionHost
from gateway.extensions.loader import load_extensions
from gateway.extensions.metrics import ExtensionMetrics
from gateway.metrics import GatewayMetrics
from gateway.routes_lint import UnusedUpstream, lint_routes
from gateway.routes_loader import load_routes
from gateway.routes_model import RoutesConfig
from gateway.runtime import build_runtime
from gateway.transport import build_transport

__all__ = ["domain_graph", "governance_findings"]


def domain_graph(config: RoutesConfig) -> DomainGraph:
    """The pure dependency model the authz core and the gateway share, from the routes YAML."""
    return DomainGraph(
        config.layers, (DomainNode(d.name, d.layer, d.depends_on) for d in config.domains)
    )


def _chain_findings(
    path: Path, config: RoutesConfig, host: ExtensionHost | None
) -> list[ConfigError]:
    """What ``serve`` would refuse while wiring the chains, found by wiring them as it does: a
    route needing auth without an ``auth:`` section, a header rule writing an identity header,
    ``inter_domain`` listed without its section. Nothing is fetched or connected."""
    from doma_gateway.gateway_process import auth_section, wire_policies

    metrics = GatewayMetrics(CollectorRegistry())
    try:
        wiring = wire_policies(path, auth_section(path), metrics)
        build_runtime(
            config,
            transport=build_transport(config.gateway.transport),
            metrics=metrics,
            policies=wiring.policies,
            extensions=host,
        )
    except ConfigError as error:
        return [error]
    return []


def governance_findings(path: Path, *, has_domains: bool) -> int:
    """Print every finding for the routes at ``path``; their number."""
    findings: list[ConfigError] = []
    inter_domain = load_inter_domain(path)
    if has_domains:
        config = load_routes(path)
        # Imports every factory and entry point named, so a typo fails here, not in serve.
        host = load_extensions(path, config, ExtensionMetrics(CollectorRegistry()))
        # An extension at a point before the upstream may route_to any upstream of the file.
        routable = host is not None and any(point != "post_response" for point in host.plans)
        for finding in lint_routes(config):
            if routable and isinstance(finding, UnusedUpstream):
                print(f"note: {finding}; only an extension's route_to can reach it")
            else:
                findings.append(finding)
        findings.extend(_chain_findings(path, config, host))
        for plan in host.plans.values() if host is not None else ():
            steps = ", ".join(f"{step.name} ({step.timeout:g}s)" for step in plan.steps)
            print(f"extensions {plan.name}  on_error={plan.on_error}: {steps}")
        if inter_domain is not None:
            print(
                f"inter_domain: mode={inter_domain.mode}  "
                f"trust_domain={inter_domain.trust_domain or '*'}"
            )
    elif inter_domain is not None:
        raise no_domains(inter_domain)
    for finding in findings:
        print(f"error: {finding}", file=sys.stderr)
    return len(findings)
