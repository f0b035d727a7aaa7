"""The domain map as SVG, laid out here: one band per layer (highest on top), a box per domain.

Dependencies point down the page, or curve below the band when both domains share a layer.
Every box is a ``<g class="domain" id="domain-<name>">`` so the admin page can colour it with
live state; nothing here needs Graphviz or a browser.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from gateway.domain_map import DomainMap

__all__ = ["svg"]

_BOX_W, _BOX_H = 190, 66
_GAP = 36
_LABEL_W = 150
_PAD = 28
_BAND_H = _BOX_H + 2 * _PAD
_BAND_GAP = 46
_STYLE = """
.band { fill: #f6f8fa; stroke: #d0d7de; }
.band-label { font: 600 13px sans-serif; fill: #57606a; }
.domain rect { fill: #eef3fb; stroke: #44546a; stroke-width: 1.2; }
.domain .name { font: 600 14px sans-serif; fill: #1f2328; }
.domain .meta { font: 11px sans-serif; fill: #57606a; }
.dependency { fill: none; stroke: #44546a; stroke-width: 1.3; marker-end: url(#arrow); }
"""


def svg(graph: DomainMap) -> str:
    bands = list(reversed(graph.layers))
    widest = max((len(boxes) for _, boxes in bands), default=0)
    width = _LABEL_W + max(widest, 1) * (_BOX_W + _GAP) + _GAP
    height = len(bands) * (_BAND_H + _BAND_GAP) + _BAND_GAP
    where: dict[str, tuple[float, float, int]] = {}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="domain map">',
        f"<style>{_STYLE}</style>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#44546a"/></marker></defs>',
    ]
    for row, (layer, boxes) in enumerate(bands):
        top = _BAND_GAP + row * (_BAND_H + _BAND_GAP)
        parts.append(
            f'<g class="layer" id={quoteattr("layer-" + layer)}>'
            f'<rect class="band" x="8" y="{top}" width="{width - 16}" height="{_BAND_H}" rx="8"/>'
            f'<text class="band-label" x="20" y="{top + _BAND_H / 2 + 4}">{escape(layer)}</text>'
        )
        for column, box in enumerate(boxes):
            x = _LABEL_W + _GAP / 2 + column * (_BOX_W + _GAP)
            y = top + _PAD
            where[box.name] = (x, y, row)
            tip = f"{box.name} ({box.layer}, {box.owner}): {box.summary}"
            parts.append(
                f'<g class="domain" id={quoteattr("domain-" + box.name)} '
                f"data-domain={quoteattr(box.name)}><title>{escape(tip)}</title>"
                f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="6"/>'
                f'<text class="name" x="{x + 12}" y="{y + 22}">{escape(box.name)}</text>'
                f'<text class="meta" x="{x + 12}" y="{y + 40}">{escape(box.summary)}</text>'
                f'<text class="meta" x="{x + 12}" y="{y + 56}">{escape(box.owner)}</text></g>'
            )
        parts.append("</g>")
    for caller, target in graph.edges:
        if caller not in where or target not in where:
            continue
        parts.append(_edge(caller, target, where[caller], where[target]))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _edge(
    caller: str, target: str, start: tuple[float, float, int], end: tuple[float, float, int]
) -> str:
    (x1, y1, row1), (x2, y2, row2) = start, end
    cx1, cx2 = x1 + _BOX_W / 2, x2 + _BOX_W / 2
    if row1 < row2:
        # Down the page: caller's bottom to target's top.
        sy, ey = y1 + _BOX_H, y2
        mid = (sy + ey) / 2
        path = f"M{cx1},{sy} C{cx1},{mid} {cx2},{mid} {cx2},{ey}"
    else:
        # Same layer: leave and enter from below, curving under the band.
        sy = ey = y1 + _BOX_H
        dip = sy + _PAD + _BAND_GAP / 2
        path = f"M{cx1},{sy} C{cx1},{dip} {cx2},{dip} {cx2},{ey}"
    # '_' never appears in a domain name, so no two dependencies share an id (a → b-c, a-b → c).
    ident = quoteattr(f"edge-{caller}_to_{target}")
    return (
        f'<path class="dependency" id={ident} d="{path}"><title>{caller} → {target}</title></path>'
    )
