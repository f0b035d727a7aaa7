"""Every Istio object in config/istio/ validates against Istio's own schemas, and the policy
checks every route that doma-gateway does not itself let through.

Kinds that are CRDs are validated against the ``openAPIV3Schema`` of the CRD vendored in
``tests/fixtures/istio/``: its JSON Schema part with ``jsonschema``, its CEL rules
(``x-kubernetes-validations``, which the API server would evaluate) with ``cel-python``.
IstioOperator is read by istioctl, not served as a CRD: its meshConfig is
validated against ``mesh-config.schema.yaml``, written from Istio's MeshConfig reference.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from authz.bypass import BypassRules
from authz.loader import load_auth_settings
from gateway.routes_loader import load_routes

ROOT = Path(__file__).resolve().parents[2]
ISTIO = ROOT / "config" / "istio"
FIXTURES = ROOT / "tests" / "fixtures" / "istio"
ROUTES = ROOT / "routes"


def crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(group, kind) -> CRD, from the vendored files."""
    found = {}
    for path in sorted(FIXTURES.glob("*.istio.io.yaml")):
        crd = yaml.safe_load(path.read_text())
        found[(crd["spec"]["group"], crd["spec"]["names"]["kind"])] = crd
    return found


CRDS = crds()


def istio_objects() -> list[tuple[str, dict[str, Any]]]:
    objects = []
    for path in sorted(ISTIO.glob("*.yaml")):
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document is not None:
                objects.append((f"{path.name}#{index}", document))
    return objects


OBJECTS = istio_objects()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for _, obj in OBJECTS if obj["kind"] == kind]


def crd_schema(obj: dict[str, Any]) -> dict[str, Any]:
    group, _, version = obj["apiVersion"].rpartition("/")
    crd = CRDS.get((group, obj["kind"]))
    assert crd is not None, (
        f"no vendored CRD for {obj['apiVersion']} {obj['kind']}: add it to tests/fixtures/istio/"
    )
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            assert served["served"], f"{obj['apiVersion']} is no longer served"
            return served["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]
    raise AssertionError(f"{crd['metadata']['name']} has no version {version}")


class CelRuleFailed(jsonschema.ValidationError):
    """An ``x-kubernetes-validations`` rule evaluated to false."""


CEL = celpy.Environment()


def check_cel_rules(schema: dict[str, Any], value: Any, where: str = "") -> None:
    """Evaluates every CEL rule of ``schema`` that applies to ``value``, as the API server does."""
    for validation in schema.get("x-kubernetes-validations", []):
        rule = validation["rule"]
        assert "oldSelf" not in rule, "transition rules need the previous object"
        result = CEL.program(CEL.compile(rule)).evaluate({"self": celpy.json_to_cel(value)})
        # An evaluation error comes back as a value, not an exception; only true passes.
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            raise CelRuleFailed(f"{where or '<root>'}: {validation['message']} ({rule})")
    if isinstance(value, dict):
        for key, item in value.items():
            child = schema.get("properties", {}).get(key)
            if child is None and isinstance(schema.get("additionalProperties"), dict):
                child = schema["additionalProperties"]
            if child is not None:
                check_cel_rules(child, item, f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            check_cel_rules(schema["items"], item, f"{where}[{index}]")


def validate_crd_object(obj: dict[str, Any]) -> None:
    schema = crd_schema(obj)
    jsonschema.validate(obj, schema, cls=jsonschema.Draft7Validator)
    check_cel_rules(schema, obj)
    assert obj["metadata"]["name"] and obj["metadata"]["namespace"], "name and namespace"


MESH_SCHEMA = yaml.safe_load((FIXTURES / "mesh-config.schema.yaml").read_text())


def test_vendored_crds_are_unchanged_copies():
    readme = (FIXTURES / "README.md").read_text()
    recorded = dict(re.findall(r"\| `([\w.]+\.yaml)` \| `([0-9a-f]{64})` \|", readme))
    vendored = {p.name for p in FIXTURES.glob("*.istio.io.yaml")}
    assert set(recorded) == vendored and vendored
    for name, digest in recorded.items():
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in readme and "b8f8791d9" in readme


@pytest.mark.parametrize(("where", "obj"), OBJECTS, ids=[where for where, _ in OBJECTS])
def test_every_istio_object_validates_against_istio_schemas(where, obj):
    if obj["kind"] == "IstioOperator":
        jsonschema.validate(obj, MESH_SCHEMA, cls=jsonschema.Draft7Validator)
    else:
        validate_crd_object(obj)


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("AuthorizationPolicy", ("spec", "action"), "CUSTOMISED"),
        ("AuthorizationPolicy", ("spec", "rules"), [{"to": [{"operation": {"paths": "/a"}}]}]),
        ("PeerAuthentication", ("spec", "mtls", "mode"), "STRICTER"),
        # Caught by the CRDs' CEL rules only: the JSON Schema part accepts both.
        ("AuthorizationPolicy", ("spec", "targetRef"), {"kind": "Gateway", "name": "ingress"}),
        ("PeerAuthentication", ("spec", "selector"), {"matchLabels": {"app": "doma-*"}}),
        ("IstioOperator", ("spec", "meshConfig", "pathNormalization", "normalization"), "SOME"),
        ("IstioOperator", ("spec", "meshConfig", "extensionProviders"), [{"name": "x"}]),
    ],
)
def test_the_schemas_reject_a_broken_object(kind, path, bad):
    """The validation above can fail: a wrong value in each kind is caught."""
    obj = copy.deepcopy(of_kind(kind)[0])
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        if kind == "IstioOperator":
            jsonschema.validate(obj, MESH_SCHEMA, cls=jsonschema.Draft7Validator)
        else:
            validate_crd_object(obj)


def providers() -> dict[str, dict[str, Any]]:
    found = {}
    for operator in of_kind("IstioOperator"):
        for provider in operator["spec"]["meshConfig"].get("extensionProviders", []):
            kind = next(key for key in provider if key != "name")
            found[provider["name"]] = provider[kind]
    return found


def test_ext_authz_providers_fail_closed_with_a_short_timeout():
    assert providers(), "no ext-authz provider registered"
    for name, provider in providers().items():
        # Istio's default timeout is 600 s; Envoy's own default for ext_authz is 200 ms.
        assert "timeout" in provider, name
        assert float(provider["timeout"].rstrip("s")) <= 2, name
        assert provider["failOpen"] is False and provider["statusOnError"] == "503", name
        assert provider["service"].endswith(".doma-system.svc.cluster.local"), name


def test_mesh_path_normalization_merges_slashes():
    (operator,) = of_kind("IstioOperator")
    normalization = operator["spec"]["meshConfig"]["pathNormalization"]["normalization"]
    # BASE (the default) and NONE are open to CVE-2021-31920.
    assert normalization in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")


def test_peer_authentication_requires_mutual_tls_where_doma_gateway_runs():
    (peer,) = of_kind("PeerAuthentication")
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    assert peer["metadata"]["namespace"] == "doma-system" and "selector" not in peer["spec"]


def istio_path_matches(pattern: str, path: str) -> bool:
    """Istio's ``paths`` matching: exact, ``prefix*``, ``*suffix``, ``*`` and ``{*}``/``{**}``."""
    if "{*}" in pattern or "{**}" in pattern:
        regex = "/".join(
            "[^/]+" if part == "{*}" else ".*" if part == "{**}" else re.escape(part)
            for part in pattern.split("/")
        )
        return re.fullmatch(regex, path) is not None
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return path.endswith(pattern[1:])
    return path == pattern


def checked_by_custom_policy(path: str) -> bool:
    for policy in of_kind("AuthorizationPolicy"):
        if policy["spec"].get("action") != "CUSTOM":
            continue
        for rule in policy["spec"]["rules"]:
            for to in rule["to"]:
                operation = to["operation"]
                if any(
                    istio_path_matches(p, path) for p in operation.get("paths", ["*"])
                ) and not any(istio_path_matches(p, path) for p in operation.get("notPaths", [])):
                    return True
    return False


def sample(path: str) -> str:
    """One concrete request path for a route glob (``*`` one segment, ``**`` two)."""
    return "/".join("seg" if p == "*" else "a/b" if p == "**" else p for p in path.split("/"))


def test_custom_policy_names_a_registered_provider():
    for policy in of_kind("AuthorizationPolicy"):
        assert policy["spec"]["provider"]["name"] in providers()


def test_every_route_is_checked_unless_doma_gateway_bypasses_it():
    """notPaths only spare a round trip: they must never exempt a path that needs a token."""
    config = load_routes(ROUTES)
    bypass = BypassRules(load_auth_settings(ROUTES).bypass)
    paths = []
    for domain in config.domains:
        for version in domain.versions:
            prefixes = [f"/api/{version.name}/{domain.name}"]
            if version.name == domain.default_version:
                prefixes.append(f"/api/{domain.name}")
            paths += [
                prefix + sample(route.path) for prefix in prefixes for route in version.routes
            ]
    assert len(paths) > 20
    for path in paths:
        assert checked_by_custom_policy(path) or bypass.matches(path), path
    unchecked = [path for path in paths if not checked_by_custom_policy(path)]
    assert unchecked, "the notPaths exempt nothing: the round trip they save is gone"
