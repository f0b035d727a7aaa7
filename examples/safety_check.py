"""A safety check that can keep a driver offline: Uber's "go online" veto, as an extension.

Joined to a domain point (``rides.go_online``) or ``pre_upstream``, it refuses the request with
403 ``safety_hold`` when the driver is on hold, and with 400 ``driver_unidentified`` when the
request names no driver. The driver is the verified token's ``sub`` when auth ran, else the
``driver_header`` (for internal callers the mesh already vouches for).

Settings::

    blocked_drivers: [d-17, d-42]     # drivers on safety hold
    driver_header: x-driver-id        # default
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.extensions import Call, Outcome, deny

__all__ = ["SafetyCheck", "create"]


class SafetyCheck:
    def __init__(self, blocked: frozenset[str], driver_header: str):
        self._blocked = blocked
        self._header = driver_header

    async def __call__(self, call: Call) -> Outcome | None:
        driver = (call.claims or {}).get("sub") or call.headers.get(self._header)
        if not isinstance(driver, str) or not driver:
            return deny("driver_unidentified", status=400)
        if driver in self._blocked:
            return deny("safety_hold")
        return None


def create(settings: Mapping[str, Any]) -> SafetyCheck:
    unknown = set(settings) - {"blocked_drivers", "driver_header"}
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    blocked = settings.get("blocked_drivers", [])
    if not isinstance(blocked, list) or not all(isinstance(d, str) for d in blocked):
        raise ValueError("blocked_drivers must be a list of driver ids")
    header = str(settings.get("driver_header", "x-driver-id")).lower()
    return SafetyCheck(frozenset(blocked), header)
