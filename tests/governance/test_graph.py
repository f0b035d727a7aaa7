"""``doma-gateway graph``: the shipped edge as Mermaid, DOT and SVG, with every domain and edge."""

from __future__ import annotations

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
    assert f'scan["scan<br/>v1, v2* · {routes} routes<br/>team-scan"]' in text
    for caller, target in EDGES:
        assert f"  {caller} --> {target}\n" in text


def test_dot_has_a_cluster_per_layer_and_every_edge(capsys):
    text = graph("dot", capsys)
    assert text.startswith("digraph domains {")
    for layer in CONFIG.layers:
        assert f"subgraph cluster_{layer.replace('-', '_')} {{" in text
    for caller, target in EDGES:
        assert f"  {caller} -> {target};\n" in text


def test_svg_is_well_formed_with_a_band_per_layer_a_box_per_domain_and_every_edge(capsys):
    root = ET.fromstring(graph("svg", capsys))  # noqa: S314 (our own output)
    assert root.tag == f"{SVG}svg"
    layers = [g.get("id") for g in root.iter(f"{SVG}g") if g.get("class") == "layer"]
    assert layers == [f"layer-{layer}" for layer in reversed(CONFIG.layers)]
    domains = {g.get("data-domain") for g in root.iter(f"{SVG}g") if g.get("class") == "domain"}
    assert domains == {d.name for d in CONFIG.domains}
    edges = {p.get("id") for p in root.iter(f"{SVG}path") if p.get("class") == "dependency"}
    assert edges == {f"edge-{caller}-{target}" for caller, target in EDGES}


def test_graph_writes_a_file_with_output(tmp_path):
    target = tmp_path / "map.svg"
    assert main(["graph", str(ROUTES), "--format", "svg", "-o", str(target)]) == 0
    ET.parse(target)  # noqa: S314 (our own output)
