"""Policies: pure ASGI classes wrapped around the proxy endpoint, one module each.

:data:`POLICIES` maps the names a route or domain may list under ``policies:`` to their
:class:`~gateway.policies.spec.PolicySpec` (a settings parser the routes loader runs, and a
builder); :func:`build_chain` assembles a route's chain from them, in YAML order.
"""

from __future__ import annotations

from gateway.policies.chain import build_chain
from gateway.policies.registry import POLICIES
from gateway.policies.resources import PolicyResources
from gateway.policies.spec import ChainContext, PolicySpec

__all__ = ["POLICIES", "ChainContext", "PolicyResources", "PolicySpec", "build_chain"]
