"""Routes text the tests share: one ``scan`` domain whose one route takes every path."""

from __future__ import annotations

__all__ = ["scan_catch_all"]


def scan_catch_all(upstream_url: str) -> str:
    """``layers``, a ``scan`` domain with a ``/**`` route, and its upstream (append to an
    ``auth:`` section for a whole routes file)."""
    return f"""\
layers: [product]
domains:
  scan:
    layer: product
    owner: team-scan
    upstream: main
    versions: {{v1: {{routes: [{{path: /**}}]}}}}
upstreams:
  main:
    endpoints: [{upstream_url}]
"""
