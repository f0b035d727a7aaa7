"""``/admin/map``: the domain map with live state, on the admin listener.

The page is the SVG of :mod:`gateway.domain_map_svg` plus a table per domain; a small script
(served beside it, so the page's Content-Security-Policy needs no inline script) polls
``/admin/map/state`` every two seconds and colours each domain by the health of its upstreams:
breaker state, ejected endpoints, and the request rate it computes from successive counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.admin_map_script import SCRIPT
from gateway.domain_map import domain_map
from gateway.domain_map_svg import svg
from gateway.runtime import Runtime, RuntimeHolder

__all__ = ["map_routes", "map_state"]

_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; connect-src 'self'; "
    "style-src 'unsafe-inline'; img-src data:",
    "cache-control": "no-store",
}
_STYLE = """
body { font: 14px sans-serif; margin: 24px; color: #1f2328; }
table { border-collapse: collapse; margin-top: 16px; }
th, td { text-align: left; padding: 4px 12px; border-bottom: 1px solid #d0d7de; }
.domain.healthy rect { fill: #dcf5e3; } .domain.degraded rect { fill: #fff3c4; }
.domain.down rect { fill: #ffd8d3; }
td.healthy { color: #1a7f37; } td.degraded { color: #9a6700; } td.down { color: #cf222e; }
"""


def _upstream_health(snapshot: dict[str, object]) -> str:
    endpoints = snapshot.get("endpoints") or []
    assert isinstance(endpoints, list)
    ejected = sum(1 for e in endpoints if e.get("ejected"))
    breaker = snapshot.get("breaker")
    if breaker == "open" or (endpoints and ejected == len(endpoints)):
        return "down"
    if breaker == "half-open" or ejected:
        return "degraded"
    return "healthy"


def _requests_by_domain(metrics_text: bytes) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text.decode()):
        if family.name != "doma_gateway_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                domain = sample.labels.get("domain", "")
                counts[domain] = counts.get(domain, 0.0) + sample.value
    return counts


def map_state(runtime: Runtime, metrics_text: bytes) -> dict[str, object]:
    upstreams = {}
    for name, pool in runtime.pools.items():
        snapshot = pool.snapshot()
        endpoints = snapshot["endpoints"]
        assert isinstance(endpoints, list)
        upstreams[name] = {
            "health": _upstream_health(snapshot),
            "breaker": snapshot["breaker"],
            "endpoints": len(endpoints),
            "ejected": sum(1 for e in endpoints if e["ejected"]),
            "outstanding": sum(int(e["outstanding"]) for e in endpoints),
        }
    counts = _requests_by_domain(metrics_text)
    domains = {}
    order = ("healthy", "degraded", "down")
    for domain in runtime.config.domains:
        used = sorted({r.upstream for v in domain.versions for r in v.routes})
        worst = max(
            (order.index(upstreams[u]["health"]) for u in used if u in upstreams), default=0
        )
        domains[domain.name] = {
            "health": order[worst],
            "upstreams": used,
            "requests": counts.get(domain.name, 0.0),
        }
    return {"time": time.time(), "domains": domains, "upstreams": upstreams}


def _page(runtime: Runtime) -> str:
    graph = domain_map(runtime.config)
    rows = "".join(
        f"<tr data-domain={quoteattr(box.name)}><td>{escape(box.name)}</td>"
        f"<td>{escape(box.layer)}</td><td>{escape(box.summary)}</td>"
        f"<td>{escape(', '.join(box.depends_on) or '-')}</td>"
        '<td class="health">-</td><td class="breaker">-</td><td class="rate">-</td></tr>'
        for box in graph.domains
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,"><title>doma-gateway domain map</title>'
        f"<style>{_STYLE}</style></head><body><h1>Domain map</h1>"
        f'<div id="map">{svg(graph)}</div>'
        '<table id="domains"><thead><tr><th>domain</th><th>layer</th><th>versions · routes</th>'
        "<th>depends on</th><th>upstream health</th><th>breakers</th><th>requests/s</th></tr>"
        f'</thead><tbody>{rows}</tbody></table><p id="updated">waiting for live state</p>'
        '<script src="/admin/map.js"></script></body></html>'
    )


def map_routes(holder: RuntimeHolder, metrics_text: Callable[[], bytes]) -> list[Route]:
    async def page(request: Request) -> Response:
        return HTMLResponse(_page(holder.current), headers=_HEADERS)

    async def script(request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers=_HEADERS)

    async def state(request: Request) -> Response:
        return JSONResponse(map_state(holder.current, metrics_text()), headers=_HEADERS)

    return [
        Route("/admin/map", page),
        Route("/admin/map.js", script),
        Route("/admin/map/state", state),
    ]
