"""``doma-gateway graph``: the shipped edge as Mermaid, DOT and SVG, with every domain and edge."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from doma_gateway.cli import main
from gateway.routes_loader import load_routes

ROOT = Path(__file__).resolve().parents[2]
ROUTES = ROOT / "routes"
CONFIG = load_routes(ROUTES)
EDGES = [(d.name, dep) for d in CONFIG.domains for dep in d.depends_on]
SVG = "{http://www.w3.org/2000/svg}"


def graph(fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["graph", str(ROUTES), "--format", fmt]) == 0
    return capsys.readouterr().out


def test_mermaid_groups_domains_by_layer_with_versions_and_route_counts(capsys):
    text = graph("mermaid", capsys)
    assert text.startswith("flowchart TB\n")
    # Highest layer first, so dependencies point down.
    order = [text.index(f'["{layer}"]') for layer in reversed(CONFIG.layers)]
    assert order == sorted(order)
    scan = CONFIG.domain("scan")
    assert scan is not None
    routes = sum(len(v.routes) for v in scan.versions)
    assert f'd_scan["scan<br/>v1, v2* · {routes} routes<br/>team-scan"]' in text
    for caller, target in EDGES:
        assert f"  d_{caller} --> d_{target}\n" in text


def test_dot_has_a_cluster_per_layer_and_every_edge(capsys):
    text = graph("dot", capsys)
    assert text.startswith("digraph domains {")
    for layer in CONFIG.layers:
        assert f'subgraph "cluster_{layer}" {{' in text
    for caller, target in EDGES:
        assert f'  "{caller}" -> "{target}";\n' in text


def test_svg_is_well_formed_with_a_band_per_layer_a_box_per_domain_and_every_edge(capsys):
    root = ET.fromstring(graph("svg", capsys))  # noqa: S314 (our own output)
    assert root.tag == f"{SVG}svg"
    layers = [g.get("id") for g in root.iter(f"{SVG}g") if g.get("class") == "layer"]
    assert layers == [f"layer-{layer}" for layer in reversed(CONFIG.layers)]
    domains = {g.get("data-domain") for g in root.iter(f"{SVG}g") if g.get("class") == "domain"}
    assert domains == {d.name for d in CONFIG.domains}
    edges = {p.get("id") for p in root.iter(f"{SVG}path") if p.get("class") == "dependency"}
    assert edges == {f"edge-{caller}_to_{target}" for caller, target in EDGES}


def test_graph_writes_a_file_with_output(tmp_path):
    target = tmp_path / "map.svg"
    assert main(["graph", str(ROUTES), "--format", "svg", "-o", str(target)]) == 0
    ET.parse(target)  # noqa: S314 (our own output)


# Names the routes allow that the output languages give a meaning to: DOT's and Mermaid's
# keywords as domains, quotes and markup in an owner, a layer with spaces, quotes and '#'.
HOSTILE = """\
layers: ['Core "Infra"/Layer #1', edge]
domains:
  node:
    layer: 'Core "Infra"/Layer #1'
    owner: 'team "quoted" <b>&'
    upstream: main
    auth: bypass
    versions: {v1: {routes: [{name: a, path: /a}]}}
  edge:
    layer: edge
    owner: back\\slash
    upstream: main
    auth: bypass
    depends_on: [node, end]
    versions: {v1: {routes: [{name: b, path: /b}]}}
  end:
    layer: 'Core "Infra"/Layer #1'
    owner: team-end
    upstream: main
    auth: bypass
    versions: {v1: {routes: [{name: c, path: /c}]}}
upstreams:
  main: {endpoints: ["http://127.0.0.1:1"]}
"""


def hostile_graph(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    (tmp_path / "routes.yaml").write_text(HOSTILE)
    assert main(["graph", str(tmp_path / "routes.yaml"), "--format", fmt]) == 0
    return capsys.readouterr().out


def test_dot_quotes_every_id_and_escapes_every_label(tmp_path, capsys):
    text = hostile_graph("dot", tmp_path, capsys)
    assert 'subgraph "cluster_Core \\"Infra\\"/Layer #1" {' in text
    assert '    "node" [label="node\\nv1 · 1 route\\nteam \\"quoted\\" <b>&"];' in text
    assert '    "edge" [label="edge\\nv1 · 1 route\\nback\\\\slash"];' in text
    assert '  "edge" -> "node";\n  "edge" -> "end";\n' in text
    # Outside quoted strings, only the statements the renderer writes itself.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert "edge ->" not in bare and "node [label" not in bare


def test_mermaid_prefixes_every_id_and_escapes_every_label(tmp_path, capsys):
    text = hostile_graph("mermaid", tmp_path, capsys)
    assert '  subgraph layer_1["Core #quot;Infra#quot;/Layer #1"]' in text
    assert '    d_node["node<br/>v1 · 1 route<br/>team #quot;quoted#quot; #lt;b#gt;#amp;"]' in text
    assert "  d_edge --> d_end\n" in text
    assert "\n    end[" not in text


def test_svg_gives_every_dependency_its_own_id_whatever_the_dashes_in_names(tmp_path, capsys):
    # a -> b-c and a-b -> c: joined with '-', both were edge-a-b-c.
    domain = "    layer: l\n    owner: t\n    upstream: main\n    auth: bypass\n"
    routes = "layers: [l]\ndomains:\n" + "".join(
        f"  {name}:\n{domain}    depends_on: [{', '.join(needs)}]\n"
        f"    versions: {{v1: {{routes: [{{name: r, path: /r}}]}}}}\n"
        for name, needs in (("a", ["b-c"]), ("a-b", ["c"]), ("b-c", []), ("c", []))
    )
    routes += 'upstreams:\n  main: {endpoints: ["http://127.0.0.1:1"]}\n'
    (tmp_path / "routes.yaml").write_text(routes)
    assert main(["graph", str(tmp_path / "routes.yaml"), "--format", "svg"]) == 0
    root = ET.fromstring(capsys.readouterr().out)  # noqa: S314 (our own output)
    ids = [p.get("id") for p in root.iter(f"{SVG}path") if p.get("class") == "dependency"]
    assert sorted(ids) == ["edge-a-b_to_c", "edge-a_to_b-c"]
