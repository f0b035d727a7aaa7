"""Everything one configuration needs at request time, built together and swapped as one.

A reload builds a new :class:`Runtime` beside the serving one and replaces the reference in
:class:`RuntimeHolder` with a single assignment: a request keeps the runtime it started with,
so in-flight requests finish on the old config. Upstream pools whose settings did not change
are carried over, keeping their breaker and outlier state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from gateway.asgi import ASGIApp
from gateway.extensions.endpoint import ExtensionEndpoint
from gateway.extensions.host import ExtensionHost
from gateway.metrics import GatewayMetrics
from gateway.policies import POLICIES, PolicyResources, build_chain
from gateway.policies.auth import Authorizer
from gateway.proxy import Proxy
from gateway.router import Router
from gateway.routes_model import Route, RoutesConfig
from gateway.upstream_pool import UpstreamPool

__all__ = ["Runtime", "RuntimeHolder", "build_runtime"]


@dataclass(frozen=True, slots=True)
class Runtime:
    config: RoutesConfig
    router: Router
    pools: dict[str, UpstreamPool]
    chains: dict[int, ASGIApp]
    # The extension points of this configuration (extensions:); None without extensions.
    extensions: ExtensionHost | None = None

    def chain(self, route: Route) -> ASGIApp:
        return self.chains[id(route)]


class RuntimeHolder:
    """The serving runtime; ``current`` is replaced atomically on reload."""

    __slots__ = ("current", "generation")

    def __init__(self, runtime: Runtime):
        self.current = runtime
        self.generation = 1

    def swap(self, runtime: Runtime) -> None:
        self.current = runtime
        self.generation += 1


def build_runtime(
    config: RoutesConfig,
    *,
    transport: httpx.AsyncBaseTransport,
    metrics: GatewayMetrics,
    authorizer: Authorizer | None = None,
    identity_headers: Sequence[str] = (),
    previous: Runtime | None = None,
    policies: PolicyResources | None = None,
    extensions: ExtensionHost | None = None,
) -> Runtime:
    """``policies`` carries what chains share across reloads (the composition root builds it);
    without it, one is made from ``authorizer`` and ``identity_headers``."""
    old_pools = previous.pools if previous is not None else {}
    pools = {}
    for name, upstream in config.upstreams.items():
        old = old_pools.get(name)
        pools[name] = (
            old if old is not None and old.settings == upstream else UpstreamPool(upstream, metrics)
        )
    proxy: ASGIApp = Proxy(pools, transport, metrics, config.gateway)
    if extensions is not None:
        proxy = ExtensionEndpoint(proxy, host=extensions)
    resources = policies or PolicyResources(
        authorizer=authorizer, identity_headers=identity_headers
    )
    chains: dict[int, ASGIApp] = {}
    for domain in config.domains:
        for version in domain.versions:
            for route in version.routes:
                chains[id(route)] = build_chain(
                    proxy,
                    domain=domain,
                    version=version,
                    route=route,
                    gateway=config.gateway,
                    resources=resources,
                    policies=POLICIES,
                )
    return Runtime(config, Router(config), pools, chains, extensions)
