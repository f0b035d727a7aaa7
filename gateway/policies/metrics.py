"""Prometheus metrics of the policy chain: denials and store fallbacks, each with a reason label.

Created once per process (the composition root) and shared by every chain a reload builds, so
the counters keep counting across reloads. Builders bind labelled children ahead of time:
a denial then costs one increment, not a label lookup.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["PolicyMetrics"]


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.denials = Counter(
            "doma_gateway_policy_denials",
            "Requests a policy refused, by policy and reason.",
            ["policy", "reason"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "doma_gateway_policy_fallbacks",
            "Decisions a policy made without its shared store (Redis, ext-authz), by reason.",
            ["policy", "reason"],
            registry=registry,
        )

    def denial(self, policy: str, reason: str) -> Counter:
        return self.denials.labels(policy, reason)

    def fallback(self, policy: str, reason: str) -> Counter:
        return self.fallbacks.labels(policy, reason)
