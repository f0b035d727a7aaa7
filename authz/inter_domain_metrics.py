"""Counts inter-domain calls that broke the layer rule, denied or (in ``report`` mode) not.

Both commands register the counter whether or not ``inter_domain:`` is configured, so dashboards
and the metrics reference see one stable set of names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["InterDomainMetrics"]


class InterDomainMetrics:
    def __init__(self, registry: CollectorRegistry, namespace: str):
        self._violations = Counter(
            f"{namespace}_inter_domain_violations",
            "Calls between domains that break the declared dependencies or the layer order, by "
            "caller, target, reason and whether they were denied (mode enforce) or only "
            "reported (mode report).",
            ["caller", "target", "reason", "action"],
            registry=registry,
        )

    def observe(self, caller: str, target: str, reason: str, enforced: bool) -> None:
        self._violations.labels(caller, target, reason, "denied" if enforced else "reported").inc()
