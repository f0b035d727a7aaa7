"""The inter-domain call rule at runtime: who calls (a domain), what is called (a domain), may it.

:class:`InterDomainRule` turns a violation of the :class:`~authz.domain_graph.DomainGraph` into a
403 denial (``enforce``) or only into a log line and a count (``report``, for rolling the rule
out). :class:`DomainAwareAuthorizer` applies it after the token decision in ext-authz mode, where
Envoy names the caller by its mTLS identity (``source.principal``); the edge gateway's
``inter_domain`` policy applies the same rule to the callers it can identify.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from authz.check import CheckInput, Decider, Decision, deny
from authz.domain_graph import DomainGraph, caller_from_spiffe, target_domain
from authz.paths import normalize

__all__ = [
    "DomainAwareAuthorizer",
    "InterDomainMode",
    "InterDomainRule",
    "InterDomainSettings",
    "Observer",
]

log = logging.getLogger("doma.authz.inter_domain")

InterDomainMode = Literal["enforce", "report"]
# (caller, target, reason, enforced): a metrics adapter counts these.
Observer = Callable[[str, str, str, bool], None]


@dataclass(frozen=True, slots=True)
class InterDomainSettings:
    mode: InterDomainMode = "enforce"
    # Only SPIFFE ids of this trust domain name a caller; None accepts any trust domain.
    trust_domain: str | None = "cluster.local"
    # Edge gateway: peers (CIDRs) whose X-Forwarded-Client-Cert header is believed.
    trusted_proxies: tuple[str, ...] = ()
    # Edge gateway: the claim of a verified service token that names the calling domain.
    token_claim: str | None = None
    source: str = "<config>"


class InterDomainRule:
    """One graph, one mode: a denial for a forbidden call, or None to let it through."""

    __slots__ = ("_denials", "_observe", "graph", "settings")

    def __init__(
        self, graph: DomainGraph, settings: InterDomainSettings, observe: Observer | None = None
    ):
        self.graph = graph
        self.settings = settings
        self._observe = observe
        self._denials = {
            reason: deny(403, reason) for reason in ("undeclared_dependency", "layer_violation")
        }

    def check(self, caller: str | None, path: str) -> Decision | None:
        """``path`` is normalized; ``caller`` the calling domain, None when not a domain."""
        if caller is None:
            return None
        target = target_domain(path)
        return None if target is None else self.judge(caller, target)

    def judge(self, caller: str, target: str) -> Decision | None:
        """The same verdict when the target domain is already known (the edge's route match)."""
        reason = self.graph.violation(caller, target)
        if reason is None:
            return None
        enforced = self.settings.mode == "enforce"
        if self._observe is not None:
            self._observe(caller, target, reason, enforced)
        log.warning(
            "inter-domain call %s: %s -> %s",
            "denied" if enforced else "would be denied",
            caller,
            target,
            extra={"event": "inter_domain", "caller": caller, "target": target, "reason": reason},
        )
        return self._denials[reason] if enforced else None


class DomainAwareAuthorizer:
    """A decision core whose allows also pass the inter-domain rule for the mesh caller."""

    __slots__ = ("_inner", "_rule")

    def __init__(self, inner: Decider, rule: InterDomainRule):
        self._inner = inner
        self._rule = rule

    def decide_now(self, request: CheckInput) -> Decision | None:
        decision = self._inner.decide_now(request)
        return None if decision is None else self._judge(request, decision)

    async def decide(self, request: CheckInput) -> Decision:
        return self._judge(request, await self._inner.decide(request))

    def _judge(self, request: CheckInput, decision: Decision) -> Decision:
        if not decision.allowed or not request.source_principal:
            return decision
        caller = caller_from_spiffe(request.source_principal, self._rule.settings.trust_domain)
        if caller is None:
            return decision
        denial = self._rule.check(caller, normalize(request.path).path)
        return denial if denial is not None else decision
