"""The routes loader: the shipped edge, directory merging, and errors that point at the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.errors import ConfigError
from gateway.routes_loader import load_routes
from gateway.routes_model import Rewrite

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
layers: [infrastructure, product]
domains:
  scan:
    layer: product
    owner: team-scan
    upstream: scan-api
    versions:
      v1:
        routes:
          - path: /results/**
upstreams:
  scan-api:
    endpoints: [http://scan.local:8000]
"""


def _load(tmp_path: Path, text: str, name: str = "routes.yaml") -> object:
    path = tmp_path / name
    path.write_text(text)
    return load_routes(path)


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_routes(path)
    return str(caught.value).replace(str(path), "routes.yaml")


def test_the_shipped_edge_has_every_domain_in_its_layer():
    config = load_routes(ROOT / "routes")
    layers = {domain.name: domain.layer for domain in config.domains}
    assert layers == {
        "auth": "infrastructure",
        "image": "infrastructure",
        "location": "infrastructure",
        "character": "business-logic",
        "chat": "business-logic",
        "scan": "business-logic",
        "my": "product",
    }
    assert config.layers == ("infrastructure", "business-logic", "product")
    scan = config.domain("scan")
    assert scan is not None and scan.default_version == "v2"
    assert scan.versions[0].deprecated is not None and scan.versions[0].sunset is not None


def test_a_directory_is_merged_one_file_per_domain(tmp_path: Path):
    (tmp_path / "a-edge.yaml").write_text("layers: [infrastructure, product]\n")
    (tmp_path / "image.yaml").write_text(
        "domains:\n  image:\n    layer: infrastructure\n    owner: t\n    upstream: image-api\n"
        "    versions:\n      v1:\n        routes: [{path: /**, rewrite: {prefix: /}}]\n"
        "upstreams:\n  image-api:\n    endpoints: [http://image.local]\n"
    )
    (tmp_path / "scan.yaml").write_text(BASE.replace("layers: [infrastructure, product]\n", ""))
    config = load_routes(tmp_path)
    assert [d.name for d in config.domains] == ["image", "scan"]
    assert config.domains[0].versions[0].routes[0].rewrite == Rewrite(prefix="")
    assert len(config.files) == 3


def test_layers_missing_from_every_file_names_the_directory(tmp_path: Path):
    (tmp_path / "scan.yaml").write_text(BASE.replace("layers: [infrastructure, product]\n", ""))
    (tmp_path / "z-gateway.yaml").write_text("gateway: {listen: 127.0.0.1:8080}\n")
    with pytest.raises(ConfigError) as caught:
        load_routes(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: no 'layers:' list in any routes file")


def test_the_same_domain_in_two_files_names_both(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "b.yaml").write_text(
        BASE.replace("layers: [infrastructure, product]\n", "").replace(
            "upstreams:\n  scan-api:", "upstreams:\n  other-api:"
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_routes(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}/b.yaml:2:3: domain 'scan' is already defined at {tmp_path}/a.yaml:3"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("    owner: team-scan\n", "    ownr: team-scan\n"),
            "routes.yaml:5:5: unknown key 'ownr'; did you mean 'owner'?",
        ),
        (
            ("upstream: scan-api\n    versions", "upstream: scan-apl\n    versions"),
            "routes.yaml:6:15: upstream 'scan-apl' is not defined (known: scan-api)",
        ),
        (
            ("layer: product", "layer: edge"),
            "routes.yaml:4:12: layer 'edge' is not defined (known: infrastructure, product)",
        ),
        (("      v1:", "      one:"), "routes.yaml:8:7: version 'one' must look like v1"),
        (("/results/**", "/results/*x"), "routes.yaml:10:19: path '/results/*x' segment '*x'"),
        (("/results/**", "/a/../b"), "routes.yaml:10:19: path '/a/../b' segment '..'"),
        (
            ("http://scan.local:8000", "http://scan.local:8000/api"),
            "routes.yaml:13:17: endpoint 'http://scan.local:8000/api' must be http(s)://HOST[:PORT]",
        ),
        (
            ("http://scan.local:8000", "http://scan.local:99999"),
            "routes.yaml:13:17: endpoint 'http://scan.local:99999' has a port outside 1-65535",
        ),
        (
            ("http://scan.local:8000", "http://scan.local:0"),
            "routes.yaml:13:17: endpoint 'http://scan.local:0' has a port outside 1-65535",
        ),
        (
            ("[http://scan.local:8000]", "['http://scan local:8000']"),
            "routes.yaml:13:17: endpoint 'http://scan local:8000' has an invalid host",
        ),
        (
            ("http://scan.local:8000", "http://user:secret@scan.local:8000"),
            "routes.yaml:13:17: endpoint 'http://user:secret@scan.local:8000' must not carry "
            "credentials",
        ),
        (
            (
                "          - path: /results/**\n",
                "          - path: /results/**\n"
                "            name: all\n          - {path: /other, name: all}\n",
            ),
            "routes.yaml:12:13: route name 'all' is already used at ",
        ),
        (
            (
                "      v1:\n",
                '      v1:\n        link: "https://docs.example/a\\r\\nset-cookie: x=1"\n',
            ),
            "routes.yaml:9:15: link must be an http(s) URL",
        ),
        (
            (
                "      v1:\n",
                "      v1:\n        link: 'https://docs.example/a>; rel=x, <https://evil'\n",
            ),
            "routes.yaml:9:15: link must be an http(s) URL",
        ),
        (
            (
                "          - path: /results/**\n",
                "          - path: /results/**\n      v1:\n        routes: [{path: /other}]\n",
            ),
            "routes.yaml:11:7: duplicate key 'v1' (first at line 8)",
        ),
        (
            ("  scan-api:\n", "  scan-api:\n    endpoints: [http://a.local]\n  scan-api:\n"),
            "routes.yaml:14:3: duplicate key 'scan-api' (first at line 12)",
        ),
        (
            ("    endpoints:", "    load_balancing: random\n    endpoints:"),
            "routes.yaml:13:21: 'random' is not one of: round_robin, least_outstanding",
        ),
        (
            ("    endpoints:", "    max_requests: 0\n    endpoints:"),
            "routes.yaml:13:19: must be at least 1, got 0",
        ),
        (
            ("    versions:", "    default_version: v3\n    versions:"),
            "routes.yaml:7:22: default_version 'v3' is not one of this domain's versions "
            "(known: v1)",
        ),
    ],
)
def test_errors_name_the_line_and_the_valid_alternatives(
    tmp_path: Path, change: tuple[str, str], message: str
):
    text = BASE.replace(*change)
    assert text != BASE
    assert _error(tmp_path, text).startswith(message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("  scan:\n", '  "scan\\n":\n'), "routes.yaml:3:3: 'scan\\n' is not a valid name"),
        (
            ("  scan-api:\n    endpoints", '  "scan-api\\n":\n    endpoints'),
            "routes.yaml:12:3: 'scan-api\\n' is not a valid name",
        ),
        (("      v1:\n", '      "v1\\n":\n'), "routes.yaml:8:7: version 'v1\\n' must look like v1"),
        (
            ("- path: /results/**\n", '- {path: /results/**, name: "all\\n"}\n'),
            "routes.yaml:10:39: route name 'all\\n' must be printable text",
        ),
        (
            ("layers: [infrastructure, product]", 'layers: [infrastructure, "product\\n"]'),
            "routes.yaml:1:26: layer 'product\\n' must be printable text",
        ),
    ],
    ids=["domain", "upstream", "version", "route", "layer"],
)
def test_a_name_ending_in_a_newline_is_refused_with_its_line(
    tmp_path: Path, change: tuple[str, str], message: str
):
    text = BASE.replace(*change)
    assert text != BASE
    assert _error(tmp_path, text).startswith(message)


def test_a_dependency_on_a_higher_layer_is_refused(tmp_path: Path):
    text = BASE.replace(
        "    layer: product\n", "    layer: infrastructure\n    depends_on: [image]\n"
    ) + ("  image-api:\n    endpoints: [http://image.local]\n")
    text = text.replace(
        "upstreams:",
        "  image:\n    layer: product\n    owner: t\n    upstream: image-api\n"
        "    versions: {v1: {routes: [{path: /**}]}}\nupstreams:",
    )
    assert _error(tmp_path, text).startswith(
        "routes.yaml:5:17: scan (infrastructure) depends on image (product): "
        "a domain may only depend on its own or lower layers"
    )


def test_a_dependency_cycle_is_refused(tmp_path: Path):
    text = BASE.replace(
        "    layer: product\n", "    layer: product\n    depends_on: [image]\n"
    ).replace(
        "upstreams:",
        "  image:\n    layer: product\n    owner: t\n    upstream: scan-api\n"
        "    depends_on: [scan]\n    versions: {v1: {routes: [{path: /**}]}}\nupstreams:",
    )
    assert "dependency cycle: scan -> image -> scan" in _error(tmp_path, text)


def test_a_route_requiring_auth_without_an_auth_section_fails_closed(tmp_path: Path):
    from prometheus_client import CollectorRegistry

    from gateway.metrics import GatewayMetrics
    from gateway.runtime import build_runtime
    from gateway.transport import build_transport

    config = _load(tmp_path, BASE)
    with pytest.raises(
        ConfigError,
        match=r"requires auth, but no routes file has an 'auth:' section .* takes a restart",
    ):
        build_runtime(
            config, transport=build_transport("http1"), metrics=GatewayMetrics(CollectorRegistry())
        )


def test_a_symlink_to_a_missing_file_in_a_routes_directory_is_an_error(tmp_path: Path):
    (tmp_path / "edge.yaml").write_text("layers: [edge]\n")
    (tmp_path / "shop.yaml").symlink_to(tmp_path / "gone" / "shop.yaml")
    with pytest.raises(ConfigError, match=r"shop\.yaml: a symlink to a file that does not exist"):
        load_routes(tmp_path)


def test_hidden_files_in_a_routes_directory_are_left_out(tmp_path: Path):
    (tmp_path / "edge.yaml").write_text(
        "layers: [edge]\ndomains:\n  shop:\n    layer: edge\n    owner: team\n"
        "    upstream: main\n    auth: bypass\n"
        "    versions: {v1: {routes: [{name: a, path: /a}]}}\n"
        'upstreams:\n  main: {endpoints: ["http://127.0.0.1:1"]}\n'
    )
    # What an editor leaves while a file is open: a dangling lock link, a half-written copy.
    (tmp_path / ".#edge.yaml").symlink_to(tmp_path / "user@host.1234")
    (tmp_path / ".edge.yaml.swp.yaml").write_text("not: [valid")
    assert load_routes(tmp_path).layers == ("edge",)


def test_a_file_nested_thousands_deep_is_a_config_error_not_a_crash(tmp_path: Path):
    (tmp_path / "routes.yaml").write_text("layers: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_routes(tmp_path / "routes.yaml")


def test_a_second_yaml_document_is_named_as_such(tmp_path: Path):
    (tmp_path / "routes.yaml").write_text(BASE + "---\nlayers: [edge]\n")
    with pytest.raises(ConfigError) as caught:
        load_routes(tmp_path / "routes.yaml")
    assert caught.value.message == (
        "expected a single document in the stream but found another document"
    )
