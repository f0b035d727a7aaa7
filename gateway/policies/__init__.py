"""Policies: pure ASGI classes wrapped around the proxy endpoint, one module each.

:data:`POLICIES` maps the names a route may list under ``policies:`` to factories; the routes
loader accepts only these names, and :func:`build_chain` wraps them in reverse so the YAML order
is the execution order (Starlette's ``build_middleware_stack``). Authentication is not listed
there: every route has it, from its ``auth:`` key, always outermost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gateway.asgi import ASGIApp
from gateway.routes_model import PolicyRef

__all__ = ["POLICIES", "PolicyFactory", "build_chain"]

PolicyFactory = Callable[[ASGIApp, PolicyRef], ASGIApp]

POLICIES: dict[str, PolicyFactory] = {}


def build_chain(
    endpoint: ASGIApp, policies: tuple[PolicyRef, ...], factories: Mapping[str, PolicyFactory]
) -> ASGIApp:
    app = endpoint
    for ref in reversed(policies):
        app = factories[ref.name](app, ref)
    return app
