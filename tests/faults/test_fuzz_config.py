"""The YAML loaders (routes and auth) fuzzed with Hypothesis: every document either loads or is
refused with a ``ConfigError`` that names the file and, for anything inside it, the line.

Documents are mutations of valid ones (a value replaced by another type, a key dropped or added,
a list emptied), plus arbitrary text. Extends the hand-written cases of
tests/gateway/test_routes_loader.py and tests/authz/test_loader.py.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.errors import ConfigError
from authz.loader import load_auth_settings
from gateway.routes_loader import load_routes
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks

pytestmark = pytest.mark.faults

KEYS = jwks(SigningKey())

ROUTES: dict[str, Any] = {
    "layers": ["infrastructure", "product"],
    "gateway": {"drain_seconds": 5, "trusted_proxies": ["10.0.0.0/8"]},
    "domains": {
        "image": {
            "layer": "infrastructure",
            "owner": "team-image",
            "auth": "bypass",
            "upstream": "main",
            "versions": {"v1": {"routes": [{"name": "all", "path": "/**"}]}},
        },
        "scan": {
            "layer": "product",
            "owner": "team-scan",
            "auth": "bypass",
            "depends_on": ["image"],
            "upstream": "main",
            "default_version": "v2",
            "versions": {
                "v1": {
                    "deprecated": "2026-01-01T00:00:00Z",
                    "sunset": "2099-01-01T00:00:00Z",
                    "routes": [
                        {"name": "results", "path": "/results/**", "methods": ["GET"]},
                        {"name": "fixed", "path": "/fixed", "rewrite": {"path": "/x"}},
                    ],
                },
                "v2": {"routes": [{"name": "tools", "path": "/**", "rewrite": {"prefix": "/"}}]},
            },
        },
    },
    "upstreams": {
        "main": {
            "endpoints": ["http://127.0.0.1:1", "http://127.0.0.1:2"],
            "load_balancing": "round_robin",
            "max_requests": 100,
            "timeouts": {"connect_seconds": 1, "read_seconds": 5, "total_seconds": 8},
            "retries": {"attempts": 2, "retry_on": ["connect_failure", 503]},
            "circuit_breaker": {"failures": 3, "reset_seconds": 1},
            "outlier_detection": {"consecutive_failures": 2},
        }
    },
}

AUTH: dict[str, Any] = {
    "auth": {
        "issuers": [
            {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "jwks_file": "jwks.json",
                "algorithms": ["RS256"],
                "leeway_seconds": 30,
            }
        ],
        "claims_to_headers": {"sub": "x-user-id"},
        "bypass": ["/api/v1/*/health"],
        "revocation": {
            "store": "memory://",
            "bus": "memory://",
            "epoch_check_interval_seconds": 1,
            "circuit_breaker": {"failures": 3, "reset_seconds": 2},
        },
    }
}

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "/**", "*", "..", "v1", "http://h:1/p", "memory://", "GET", "-1", "1e9"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add", "empty"]))
        if action == "replace":
            parent[path[-1]] = draw(_values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(_values)
        elif action == "empty":
            value = parent[path[-1]]
            parent[path[-1]] = type(value)() if isinstance(value, dict | list) else None
    return document


_POSITION = re.compile(r":\d+:\d+: \S")


def _refused_with_a_place(error: ConfigError, path: Path) -> None:
    text = str(error)
    assert text.startswith(str(path)), text
    # Anything wrong inside the file points at its line; only whole-file problems (unreadable,
    # empty) may name the file alone.
    assert error.line > 0 or "\n" not in error.message, text
    if error.line:
        assert _POSITION.search(text), text


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(ROUTES))
def test_mutated_routes_load_or_are_refused_with_a_line(document: dict[str, Any]):
    with tempfile.TemporaryDirectory() as directory:
        path = _write(Path(directory), "routes.yaml", yaml.safe_dump(document))
        try:
            load_routes(path)
        except ConfigError as error:
            _refused_with_a_place(error, path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(AUTH))
def test_mutated_auth_sections_load_or_are_refused_with_a_line(document: dict[str, Any]):
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "jwks.json").write_bytes(KEYS)
        path = _write(Path(directory), "routes.yaml", yaml.safe_dump(document))
        try:
            load_auth_settings(path)
        except ConfigError as error:
            _refused_with_a_place(error, path)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_is_a_config_error_never_a_crash(text: str):
    with tempfile.TemporaryDirectory() as directory:
        path = _write(Path(directory), "routes.yaml", text)
        for load in (load_routes, load_auth_settings):
            try:
                load(path)
            except ConfigError as error:
                _refused_with_a_place(error, path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"layers: [a]\nname: \x1f\n", ":2:7: character '\\x1f' is not allowed in YAML"),
        (b"layers: [a]\nname: \xff\n", ":2:7: not UTF-8 text"),
    ],
    ids=["control-character", "not-utf-8"],
)
def test_unreadable_characters_are_refused_with_their_line(
    tmp_path: Path, data: bytes, message: str
):
    path = tmp_path / "routes.yaml"
    path.write_bytes(data)
    for load in (load_routes, load_auth_settings):
        with pytest.raises(ConfigError) as caught:
            load(path)
        assert str(caught.value).startswith(f"{path}{message}"), str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (".inf", "expected a finite decimal number, got '.inf'"),
        ("-.inf", "expected a finite decimal number, got '-.inf'"),
        (".nan", "expected a finite decimal number, got '.nan'"),
        ("1:30.5", "expected a finite decimal number, got '1:30.5'"),
        ("1:30", "expected a finite decimal number, got '1:30'"),
    ],
)
def test_yaml_numbers_python_cannot_read_are_refused_with_their_line(
    tmp_path: Path, value: str, message: str
):
    document = copy.deepcopy(ROUTES)
    document["upstreams"]["main"]["timeouts"]["read_seconds"] = "PLACEHOLDER"
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(document).replace("PLACEHOLDER", value))
    with pytest.raises(ConfigError) as caught:
        load_routes(path)
    assert re.search(rf":\d+:\d+: {re.escape(message)}", str(caught.value)), str(caught.value)


@pytest.mark.parametrize("value", ["017", "1:30"])
def test_yaml_integers_python_cannot_read_are_refused_with_their_line(tmp_path: Path, value: str):
    document = copy.deepcopy(ROUTES)
    document["upstreams"]["main"]["max_requests"] = "PLACEHOLDER"
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(document).replace("PLACEHOLDER", value))
    with pytest.raises(ConfigError) as caught:
        load_routes(path)
    assert re.search(
        rf":\d+:\d+: expected a decimal integer, got {re.escape(repr(value))}", str(caught.value)
    ), str(caught.value)
