"""A promo tag: tells the domain service and the client which promotion a request falls under.

At ``pre_upstream`` it adds ``x-promo-tag`` to the upstream request; at ``post_response`` it
adds the same header to the response, unless the service already set one (the service knows
better). It never refuses anything.

Settings::

    tag: spring-2026                   # required
    domains: [scan, character]         # default: every domain
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.extensions import Call, Outcome, add_headers

__all__ = ["PromoTag", "create"]


class PromoTag:
    def __init__(self, tag: str, domains: frozenset[str] | None):
        self._outcome = add_headers(x_promo_tag=tag)
        self._domains = domains

    async def __call__(self, call: Call) -> Outcome | None:
        if self._domains is not None and call.domain not in self._domains:
            return None
        if call.point == "post_response" and "x-promo-tag" in call.response_headers:
            return None
        return self._outcome


def create(settings: Mapping[str, Any]) -> PromoTag:
    tag = settings.get("tag")
    if not isinstance(tag, str) or not tag:
        raise ValueError("tag is required (e.g. tag: spring-2026)")
    domains = settings.get("domains")
    return PromoTag(tag, frozenset(domains) if domains is not None else None)
