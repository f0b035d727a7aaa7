"""The layer rule as pure data: callers from SPIFFE ids and XFCC, targets from paths, verdicts."""

from __future__ import annotations

import pytest

from authz.check import CheckInput, Decision, allow, deny
from authz.domain_graph import (
    DomainGraph,
    DomainNode,
    caller_from_spiffe,
    caller_from_xfcc,
    target_domain,
)
from authz.inter_domain import DomainAwareAuthorizer, InterDomainRule, InterDomainSettings

GRAPH = DomainGraph(
    ("infrastructure", "business-logic", "product"),
    (
        DomainNode("image", "infrastructure"),
        DomainNode("character", "business-logic", ("image",)),
        DomainNode("scan", "business-logic", ("character", "image")),
        DomainNode("chat", "business-logic"),
        DomainNode("my", "product", ("scan",)),
    ),
)


@pytest.mark.parametrize(
    ("caller", "target", "verdict"),
    [
        ("scan", "character", None),
        ("scan", "scan", None),
        ("my", "scan", None),
        ("chat", "character", "undeclared_dependency"),
        ("my", "image", "undeclared_dependency"),
        ("image", "scan", "layer_violation"),
        ("character", "my", "layer_violation"),
        ("ingress", "scan", None),
    ],
)
def test_a_call_is_judged_by_layer_first_then_by_declaration(caller, target, verdict):
    assert GRAPH.violation(caller, target) == verdict


def test_a_cycle_is_found_and_named():
    graph = DomainGraph(
        ("l",),
        (DomainNode("a", "l", ("b",)), DomainNode("b", "l", ("c",)), DomainNode("c", "l", ("a",))),
    )
    assert graph.cycle() == ["a", "b", "c", "a"]
    assert GRAPH.cycle() is None


@pytest.mark.parametrize(
    ("principal", "trust_domain", "caller"),
    [
        ("spiffe://cluster.local/ns/scan/sa/scan-api", "cluster.local", "scan"),
        ("spiffe://other.mesh/ns/scan/sa/scan-api", "cluster.local", None),
        ("spiffe://other.mesh/ns/scan/sa/scan-api", None, "scan"),
        ("spiffe://cluster.local/ns/scan", "cluster.local", None),
        ("spiffe://cluster.local/ns/scan/sa/a/extra", "cluster.local", None),
        ("scan", "cluster.local", None),
        ("", "cluster.local", None),
    ],
)
def test_only_a_well_formed_spiffe_id_of_the_trust_domain_names_a_caller(
    principal, trust_domain, caller
):
    assert caller_from_spiffe(principal, trust_domain) == caller


def test_the_nearest_proxys_xfcc_element_names_the_caller():
    header = (
        "By=spiffe://cluster.local/ns/edge/sa/gw;URI=spiffe://cluster.local/ns/my/sa/my-api,"
        'By=spiffe://cluster.local/ns/edge/sa/gw;Hash=ab;URI="spiffe://cluster.local/ns/chat/sa/c"'
    )
    assert caller_from_xfcc(header, "cluster.local") == "chat"
    assert caller_from_xfcc("Hash=ab;By=x", "cluster.local") is None


@pytest.mark.parametrize(
    ("header", "caller"),
    [
        (
            'Subject="CN=a,URI=spiffe://cluster.local/ns/x/sa/x";URI=spiffe://cluster.local/ns/chat/sa/c',
            "chat",
        ),
        (
            'Subject="CN=a;URI=spiffe://cluster.local/ns/x/sa/x";URI=spiffe://cluster.local/ns/chat/sa/c',
            "chat",
        ),
        ('Subject="a\\"b,c";URI=spiffe://cluster.local/ns/chat/sa/c', "chat"),
        ("URI=spiffe://cluster.local/ns/x/sa/x,URI=spiffe://cluster.local/ns/chat/sa/c", "chat"),
        ("URI=spiffe://cluster.local/ns/chat/sa/c,", "chat"),
        # Two URIs in one element, an unterminated quote, a part without '=': nobody.
        ("URI=spiffe://cluster.local/ns/chat/sa/c;URI=spiffe://cluster.local/ns/x/sa/x", None),
        ('Subject="CN=a;URI=spiffe://cluster.local/ns/chat/sa/c', None),
        ("URI=spiffe://cluster.local/ns/x/sa/x,spiffe://cluster.local/ns/chat/sa/c", None),
        ("", None),
    ],
)
def test_xfcc_quoting_never_splits_a_value(header, caller):
    assert caller_from_xfcc(header, "cluster.local") == caller


@pytest.mark.parametrize(
    ("path", "domain"),
    [
        ("/api/v1/scan/results/1", "scan"),
        ("/api/v2.1/scan", "scan"),
        ("/api/scan/results", "scan"),
        ("/api/v1/", None),
        ("/healthz", None),
    ],
)
def test_the_target_domain_comes_from_the_api_path(path, domain):
    assert target_domain(path) == domain


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, bool]] = []

    def __call__(self, caller: str, target: str, reason: str, enforced: bool) -> None:
        self.seen.append((caller, target, reason, enforced))


def test_enforce_denies_with_403_and_the_reason():
    recorder = Recorder()
    rule = InterDomainRule(GRAPH, InterDomainSettings(mode="enforce"), recorder)
    denial = rule.check("chat", "/api/v1/character/catalog")
    assert denial is not None and denial.status == 403
    assert denial.reason == "undeclared_dependency"
    assert b'"reason": "undeclared_dependency"' in denial.body
    assert recorder.seen == [("chat", "character", "undeclared_dependency", True)]
    assert rule.check("scan", "/api/v1/character/catalog") is None


def test_report_mode_only_counts_the_would_be_denial():
    recorder = Recorder()
    rule = InterDomainRule(GRAPH, InterDomainSettings(mode="report"), recorder)
    assert rule.check("image", "/api/v1/scan/scans") is None
    assert recorder.seen == [("image", "scan", "layer_violation", False)]


class Allowing:
    def __init__(self, decision: Decision) -> None:
        self.decision = decision

    def decide_now(self, request: CheckInput) -> Decision | None:
        return self.decision

    async def decide(self, request: CheckInput) -> Decision:
        return self.decision


async def test_the_authorizer_applies_the_rule_to_the_mesh_caller_after_an_allow():
    rule = InterDomainRule(GRAPH, InterDomainSettings())
    ok = allow("ok", (), ())
    authorizer = DomainAwareAuthorizer(Allowing(ok), rule)

    def check(principal: str, path: str = "/api/v1/character/catalog") -> CheckInput:
        return CheckInput("GET", path, {}, source_principal=principal)

    assert (await authorizer.decide(check("spiffe://cluster.local/ns/scan/sa/s"))) is ok
    denied = await authorizer.decide(check("spiffe://cluster.local/ns/chat/sa/c"))
    assert denied.reason == "undeclared_dependency"
    # No mesh identity (e.g. the ingress with a user token): not an inter-domain call.
    assert (await authorizer.decide(check(""))) is ok
    # A denial from the token check stays that denial.
    unauthorized = deny(401, "missing_token")
    wrapped = DomainAwareAuthorizer(Allowing(unauthorized), rule)
    assert (await wrapped.decide(check("spiffe://cluster.local/ns/chat/sa/c"))) is unauthorized
    # The synchronous path judges the caller the same way.
    now = authorizer.decide_now(check("spiffe://cluster.local/ns/chat/sa/c"))
    assert now is not None and now.reason == "undeclared_dependency"
