"""The domain map: domains grouped by layer, their declared dependencies, versions and routes.

One model (:func:`domain_map`) and three renderings: Mermaid and Graphviz DOT text for docs and
reviews, and SVG drawn here in pure Python (:mod:`gateway.domain_map_svg`), so neither the CLI
nor the admin page needs an external binary.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.routes_model import RoutesConfig

__all__ = ["DomainBox", "DomainMap", "domain_map", "dot", "mermaid"]


@dataclass(frozen=True, slots=True)
class DomainBox:
    name: str
    layer: str
    owner: str
    versions: tuple[str, ...]
    default_version: str
    routes: int
    depends_on: tuple[str, ...]

    @property
    def summary(self) -> str:
        versions = ", ".join(
            f"{v}*" if v == self.default_version and len(self.versions) > 1 else v
            for v in self.versions
        )
        return f"{versions} · {self.routes} route{'s' if self.routes != 1 else ''}"


@dataclass(frozen=True, slots=True)
class DomainMap:
    # Lowest layer first, as in the routes YAML; each layer's domains in file order.
    layers: tuple[tuple[str, tuple[DomainBox, ...]], ...]

    @property
    def domains(self) -> tuple[DomainBox, ...]:
        return tuple(box for _, boxes in self.layers for box in boxes)

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        return tuple((box.name, dep) for box in self.domains for dep in box.depends_on)


def domain_map(config: RoutesConfig) -> DomainMap:
    boxes = [
        DomainBox(
            name=domain.name,
            layer=domain.layer,
            owner=domain.owner,
            versions=tuple(v.name for v in domain.versions),
            default_version=domain.default_version,
            routes=sum(len(v.routes) for v in domain.versions),
            depends_on=domain.depends_on,
        )
        for domain in config.domains
    ]
    return DomainMap(
        tuple((layer, tuple(b for b in boxes if b.layer == layer)) for layer in config.layers)
    )


def _mermaid_text(text: str) -> str:
    # Inside a quoted Mermaid label: entity codes for what would end the quote or open markup.
    for char, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def _dot_text(text: str) -> str:
    # Inside a quoted DOT string: a backslash and a quote escaped, nothing else interpreted.
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _mermaid_id(domain: str) -> str:
    # Prefixed: a domain may be named like a Mermaid keyword (end, graph, subgraph).
    return "d_" + domain.replace("-", "_")


def mermaid(graph: DomainMap) -> str:
    lines = ["flowchart TB"]
    # Highest layer first: dependencies point down the page.
    for index, (layer, boxes) in enumerate(reversed(graph.layers)):
        lines.append(f'  subgraph layer_{index}["{_mermaid_text(layer)}"]')
        for box in boxes:
            label = "<br/>".join(_mermaid_text(part) for part in (box.name, box.summary, box.owner))
            lines.append(f'    {_mermaid_id(box.name)}["{label}"]')
        lines.append("  end")
    for caller, target in graph.edges:
        lines.append(f"  {_mermaid_id(caller)} --> {_mermaid_id(target)}")
    return "\n".join(lines) + "\n"


def dot(graph: DomainMap) -> str:
    # Every id quoted: a domain may be named like a DOT keyword (node, edge, graph, subgraph).
    lines = [
        "digraph domains {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="sans-serif"];',
        '  edge [color="#44546a"];',
    ]
    for layer, boxes in reversed(graph.layers):
        lines.append(f'  subgraph "cluster_{_dot_text(layer)}" {{')
        lines.append(f'    label="{_dot_text(layer)}"; style=dashed; color="#9aa5b1";')
        for box in boxes:
            label = "\\n".join(_dot_text(part) for part in (box.name, box.summary, box.owner))
            lines.append(f'    "{box.name}" [label="{label}"];')
        lines.append("  }")
    for caller, target in graph.edges:
        lines.append(f'  "{caller}" -> "{target}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
