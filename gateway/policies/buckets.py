"""GCRA (the generic cell rate algorithm): a token bucket kept as one timestamp per key.

A limit of ``requests`` per ``period`` with a burst of ``burst`` is an emission interval
``T = period / requests`` and a tolerance ``burst * T``. Each key stores its theoretical arrival
time (TAT); a request is allowed when ``max(TAT, now) + T - now <= tolerance``, and then moves
the TAT on by ``T``. One number per key, no refill timer, and the same arithmetic runs in the
Redis script (:mod:`gateway.policies.rate_limit_redis`), so local and shared limits agree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["LocalBuckets", "Verdict"]


class Verdict(NamedTuple):
    # A tuple, not a frozen dataclass: one is made per request and tuples are built in C.
    allowed: bool
    remaining: int
    # Seconds until the bucket is full again, and (denied) until the next request may pass.
    reset: float
    retry_after: float


# How namedtuple's own __new__ builds one, minus that Python-level call: one is made per request.
_verdict = tuple.__new__


class LocalBuckets:
    """The buckets of one limit in this process; bounded, idle keys are dropped first."""

    __slots__ = ("_clock", "_interval", "_max_keys", "_tat", "_tolerance")

    def __init__(
        self,
        interval: float,
        tolerance: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._interval = interval
        self._tolerance = tolerance
        self._max_keys = max_keys
        self._clock = clock
        self._tat: dict[str, float] = {}

    def take(self, key: str) -> Verdict:
        now = self._clock()
        tats = self._tat
        tat = tats.get(key, now)
        if tat < now:
            tat = now
        new_tat = tat + self._interval
        allow_at = new_tat - self._tolerance
        if now < allow_at:
            return _verdict(Verdict, (False, 0, tat - now, allow_at - now))
        if key not in tats and len(tats) >= self._max_keys:
            self._evict(now)
            tats = self._tat
        tats[key] = new_tat
        remaining = math.floor((self._tolerance - (new_tat - now)) / self._interval + 1e-9)
        # Not max(): the builtin parses keyword arguments on every call, and this runs per request.
        return _verdict(Verdict, (True, remaining if remaining > 0 else 0, new_tat - now, 0.0))

    def _evict(self, now: float) -> None:
        # A key whose TAT has passed has a full bucket: forgetting it changes nothing.
        self._tat = {k: v for k, v in self._tat.items() if v > now}
        if len(self._tat) >= self._max_keys:
            # Still full of busy keys: drop the oldest half (dicts keep insertion order).
            keep = list(self._tat.items())[len(self._tat) // 2 :]
            self._tat = dict(keep)
