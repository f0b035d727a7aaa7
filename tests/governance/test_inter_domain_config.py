"""The ``inter_domain:`` section: what check accepts, and errors that point at the line."""

from __future__ import annotations

import pytest

from doma_gateway.cli import main
from tests.governance.test_check_lint import BASE, check

SECTION = "inter_domain:\n  mode: report\n  trust_domain: cluster.local\n"


def test_check_prints_the_rule_it_will_apply(tmp_path, capsys):
    code, output = check(tmp_path, SECTION + BASE, capsys)
    assert code == 0, output
    assert "inter_domain: mode=report  trust_domain=cluster.local" in output


@pytest.mark.parametrize(
    ("section", "where", "message"),
    [
        ("inter_domain:\n  mode: audit\n", "2:9", "'audit' is not one of: enforce, report"),
        ("inter_domain:\n  trust_domain: Cluster Local\n", "2:17", "must be a SPIFFE trust"),
        ('inter_domain:\n  trust_domain: "cluster.local\\n"\n', "2:17", "must be a SPIFFE trust"),
        ("inter_domain:\n  trusted_proxies: [10.0.0.0/33]\n", "2:21", "is not an IP address"),
        ("inter_domain:\n  colour: blue\n", "2:3", "unknown key 'colour'"),
    ],
    ids=["mode", "trust domain", "trust domain ending in a newline", "cidr", "unknown key"],
)
def test_inter_domain_errors_name_their_line(tmp_path, capsys, section, where, message):
    code, output = check(tmp_path, section + BASE, capsys)
    assert code == 1
    assert f"routes.yaml:{where}: " in output and message in output, output


def test_inter_domain_without_domains_is_refused(tmp_path, capsys):
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        SECTION + "auth:\n  issuers:\n    - issuer: https://i.test\n      audiences: [a]\n"
        "      jwks_url: https://i.test/k\n"
    )
    assert main(["check", str(routes)]) == 1
    assert "'inter_domain:' needs the domains it checks" in capsys.readouterr().err
