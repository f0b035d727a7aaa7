"""The admin listener: health, readiness, Prometheus metrics, the route table and the domain map.

It binds to loopback by default (security rule 7); nothing here changes state.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.admin_map import map_routes
from gateway.policies.chain import effective_policies
from gateway.runtime import Runtime, RuntimeHolder

__all__ = ["build_admin", "route_table"]


def route_table(runtime: Runtime) -> dict[str, object]:
    """The serving configuration as JSON: domains, versions, routes and upstream state."""
    config = runtime.config
    return {
        "files": list(config.files),
        "layers": list(config.layers),
        "domains": [
            {
                "name": domain.name,
                "layer": domain.layer,
                "owner": domain.owner,
                "depends_on": list(domain.depends_on),
                "default_version": domain.default_version,
                "versions": [
                    {
                        "name": version.name,
                        "deprecated": version.deprecated.isoformat()
                        if version.deprecated
                        else None,
                        "sunset": version.sunset.isoformat() if version.sunset else None,
                        "routes": [
                            {
                                "name": route.name,
                                "path": f"/api/{version.name}/{domain.name}{route.path}",
                                "methods": sorted(route.methods) if route.methods else None,
                                "upstream": route.upstream,
                                "auth": route.auth,
                                # The chain as it runs: the domain's merged with the route's.
                                "policies": [
                                    ref.name
                                    for ref, _ in effective_policies(domain, version, route)
                                ],
                                "source": route.source,
                            }
                            for route in version.routes
                        ],
                    }
                    for version in domain.versions
                ],
            }
            for domain in config.domains
        ],
        "upstreams": [pool.snapshot() for pool in runtime.pools.values()],
    }


def build_admin(
    holder: RuntimeHolder,
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    metrics_text: Callable[[], bytes] | None = None,
) -> Starlette:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if ready():
            return JSONResponse({"ready": True, "generation": holder.generation})
        return JSONResponse({"ready": False}, status_code=503)

    async def metrics(request: Request) -> Response:
        body = metrics_text() if metrics_text is not None else generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def routes(request: Request) -> Response:
        return JSONResponse({"generation": holder.generation, **route_table(holder.current)})

    def exposition() -> bytes:
        return metrics_text() if metrics_text is not None else generate_latest(registry)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/admin/routes", routes),
            # The domain map with live state (gateway.admin_map).
            *map_routes(holder, exposition),
        ]
    )
