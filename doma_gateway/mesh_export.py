"""The declared dependencies as mesh objects: Istio ``AuthorizationPolicy`` and Kubernetes
``NetworkPolicy``, one per allowed caller of each domain, so the mesh itself refuses what
``depends_on`` does not list.

Each domain runs in the namespace of its name (as the SPIFFE ids the runtime rule reads). A
namespace with at least one ALLOW policy (Istio) or one ingress NetworkPolicy (Kubernetes)
refuses every other caller, so the objects below are the whole allow-list: the domain itself,
the edge namespaces (the ingress gateway, doma-gateway), and each domain that declares a
dependency on it. Istio matches the caller's mTLS identity; NetworkPolicy the caller's
namespace, a second line for traffic that skips the sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.routes_model import Domain, RoutesConfig

__all__ = ["ExportOptions", "istio_policies", "network_policies"]

_MANAGED = {"app.kubernetes.io/managed-by": "doma-gateway"}


@dataclass(frozen=True, slots=True)
class ExportOptions:
    # None: any trust domain (inter_domain.trust_domain '*'), so callers match by namespace.
    trust_domain: str | None = "cluster.local"
    # Namespaces that may call every domain: the ingress gateway's and doma-gateway's.
    edge_namespaces: tuple[str, ...] = ("istio-system", "doma-system")


def _metadata(name: str, domain: Domain, caller: str, why: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": domain.name,
        "labels": {
            **_MANAGED,
            "doma.dev/domain": domain.name,
            "doma.dev/layer": domain.layer,
            "doma.dev/caller": caller,
        },
        "annotations": {"doma.dev/reason": why, "doma.dev/source": domain.source},
    }


def istio_policies(config: RoutesConfig, options: ExportOptions) -> list[dict[str, Any]]:
    objects = []
    for domain in config.domains:
        for name, caller, why in _callers_for(config, domain, options):
            objects.append(
                {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "AuthorizationPolicy",
                    "metadata": _metadata(name, domain, caller, why),
                    "spec": {
                        "action": "ALLOW",
                        "rules": [{"from": [{"source": _istio_source(caller, options)}]}],
                    },
                }
            )
    return objects


def _istio_source(caller: str, options: ExportOptions) -> dict[str, list[str]]:
    """The caller's mTLS identity; with any trust domain, its namespace (Istio matches a
    principal with one ``*`` at most, so ``*/ns/<caller>/sa/*`` is no pattern)."""
    if options.trust_domain is None:
        return {"namespaces": [caller]}
    return {"principals": [f"{options.trust_domain}/ns/{caller}/sa/*"]}


def network_policies(config: RoutesConfig, options: ExportOptions) -> list[dict[str, Any]]:
    objects = []
    for domain in config.domains:
        for name, caller, why in _callers_for(config, domain, options):
            objects.append(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": _metadata(name, domain, caller, why),
                    "spec": {
                        # Every pod of the domain: a domain's gateway and services alike.
                        "podSelector": {},
                        "policyTypes": ["Ingress"],
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {
                                            "matchLabels": {"kubernetes.io/metadata.name": caller}
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            )
    return objects


def _callers_for(
    config: RoutesConfig, domain: Domain, options: ExportOptions
) -> list[tuple[str, str, str]]:
    callers = [(f"allow-{domain.name}-internal", domain.name, "calls within the domain")]
    for namespace in options.edge_namespaces:
        if namespace != domain.name:
            callers.append((f"allow-{namespace}-to-{domain.name}", namespace, "the edge"))
    for other in config.domains:
        if domain.name in other.depends_on:
            callers.append(
                (
                    f"allow-{other.name}-to-{domain.name}",
                    other.name,
                    f"{other.name} depends_on {domain.name}",
                )
            )
    return callers
