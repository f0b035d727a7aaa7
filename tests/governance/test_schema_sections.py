"""routes/schema.json knows the inter_domain and extensions sections as the loaders read them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "routes" / "schema.json").read_text())
GOOD = """\
inter_domain: {mode: report, trust_domain: cluster.local, trusted_proxies: [10.0.0.0/8],
               token_claim: domain}
extensions:
  points:
    pre_upstream: {on_error: fail_open}
    rides.go_online: {routes: [go-online]}
  registered:
    - {name: safety, factory: 'examples.safety_check:create', points: [rides.go_online],
       timeout_seconds: 0.05, settings: {blocked_drivers: [d-17]}}
    - {name: promo, entry_point: promo-tag, points: [pre_upstream, post_response]}
domains:
  rides:
    layer: product
    owner: team-rides
    policies: [inter_domain]
    versions: {v1: {routes: [{name: go-online, path: /drivers/*/online, upstream: r}]}}
"""


def validate(document: object) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(document)


def test_the_sections_validate():
    validate(yaml.safe_load(GOOD))


@pytest.mark.parametrize(
    "broken",
    [
        {"inter_domain": {"mode": "audit"}},
        {"inter_domain": {"colour": "blue"}},
        {"extensions": {"points": {"pre_flight": {}}, "registered": []}},
        {"extensions": {"registered": [{"name": "a", "points": ["pre_route"]}]}},
        {"extensions": {"registered": [{"name": "a", "factory": "nocolon", "points": "x"}]}},
    ],
    ids=["mode", "unknown-key", "unknown-point", "no-factory", "factory-shape"],
)
def test_the_schema_rejects_what_the_loaders_reject(broken):
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
