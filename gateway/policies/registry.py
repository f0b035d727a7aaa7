"""The installed policies by the name a routes file lists them under."""

from __future__ import annotations

from gateway.policies import (
    auth,
    cors,
    headers,
    inter_domain,
    ip_restriction,
    rate_limit,
    request_limits,
    scopes,
)
from gateway.policies.spec import PolicySpec

__all__ = ["POLICIES"]

POLICIES: dict[str, PolicySpec] = {
    "auth": auth.SPEC,
    "scopes": scopes.SPEC,
    "inter_domain": inter_domain.SPEC,
    "rate_limit": rate_limit.SPEC,
    "cors": cors.SPEC,
    "ip_restriction": ip_restriction.SPEC,
    "request_limits": request_limits.SPEC,
    "headers": headers.SPEC,
}
