"""routes/schema.json (for editors) agrees with the loader on the shipped and test routes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.gateway.conftest import routes_text

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "routes" / "schema.json").read_text())


def _validate(document: object) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(document)


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def _as_json(text: str) -> object:
    # Dates become text, the way an editor's YAML language server sees them.
    return json.loads(json.dumps(yaml.safe_load(text), default=str))


@pytest.mark.parametrize("path", sorted((ROOT / "routes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_routes_file_validates(path: Path):
    _validate(_as_json(path.read_text()))


def test_the_test_edge_validates():
    _validate(_as_json(routes_text(["http://127.0.0.1:1"])))


@pytest.mark.parametrize(
    "broken",
    [
        {
            "domains": {
                "scan": {
                    "layer": "x",
                    "owner": "y",
                    "versions": {"one": {"routes": [{"path": "/"}]}},
                }
            }
        },
        {"upstreams": {"a": {"endpoints": ["http://h:1/with/path"]}}},
        {"upstreams": {"a": {"endpoints": ["http://h:1"], "load_balancing": "random"}}},
        {"gateway": {"colour": "blue"}},
        {"routes": []},
    ],
    ids=["version-name", "endpoint-path", "balancing", "unknown-gateway-key", "unknown-top-level"],
)
def test_the_schema_rejects_what_the_loader_rejects(broken: dict[str, object]):
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)
