"""One upstream's endpoints: balancing, passive outlier ejection, circuit breaker, retry budget.

State lives here and survives a config reload when the upstream's settings are unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pybreaker

from gateway.errors import CircuitOpen, UpstreamOverflow, UpstreamUnavailable
from gateway.metrics import GatewayMetrics
from gateway.routes_model import CircuitBreakerSettings, Upstream

__all__ = ["Breaker", "Endpoint", "UpstreamPool"]

# Envoy doubles the ejection time with every ejection of the same endpoint, up to this cap.
_MAX_EJECTION_SECONDS = 300.0


@dataclass(slots=True, eq=False)
class Endpoint:
    url: str
    outstanding: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0


class _BreakerListener(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
    def __init__(self, breaker: Breaker):
        self._breaker = breaker

    def state_change(self, cb: object, old_state: object, new_state: object) -> None:
        name = getattr(new_state, "name", str(new_state))
        if name == pybreaker.STATE_OPEN:
            self._breaker.opened_at = self._breaker.clock()
        self._breaker.on_state(name)


class _Failure(Exception):
    """Raised inside pybreaker to count a failed attempt; never leaves :meth:`Breaker.record`."""


class Breaker:
    """pybreaker's state machine, used from async code, with one trial call when half-open.

    pybreaker lets every call through once the reset timeout passed; a recovering upstream
    should see a single probe, so further calls while the probe runs are refused.
    """

    def __init__(
        self,
        name: str,
        settings: CircuitBreakerSettings,
        on_state: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.clock = clock
        self.on_state = on_state
        self.opened_at = 0.0
        self._probing = False
        self._cb = pybreaker.CircuitBreaker(
            fail_max=settings.failures,
            reset_timeout=settings.reset_seconds,
            name=name,
            throw_new_error_on_trip=False,
            listeners=[_BreakerListener(self)],
        )

    @property
    def state(self) -> str:
        return str(self._cb.current_state)

    def retry_after(self) -> int:
        remaining = self.opened_at + self.settings.reset_seconds - self.clock()
        return max(1, int(remaining + 0.999))

    def admit(self) -> None:
        """Let one attempt through, or raise :class:`CircuitOpen` with a ``Retry-After``."""
        state = self._cb.current_state
        if state == pybreaker.STATE_CLOSED:
            return
        if (
            state == pybreaker.STATE_OPEN
            and self.clock() < self.opened_at + self.settings.reset_seconds
        ):
            raise CircuitOpen("circuit_open", headers=(("retry-after", str(self.retry_after())),))
        if self._probing:
            raise CircuitOpen("circuit_open", headers=(("retry-after", "1"),))
        if state == pybreaker.STATE_OPEN:
            # Our clock decides when the reset timeout is over, so the probe's outcome is judged
            # in the half-open state whatever pybreaker's own wall-clock check would say.
            self._cb.half_open()
        self._probing = True

    def record(self, ok: bool) -> None:
        """Feed an attempt's outcome to pybreaker's state machine."""
        try:
            if not ok:
                self._cb.call(_fail)
            # A success only matters when it resets a failure count or closes a half-open breaker;
            # skipping pybreaker's lock and listeners otherwise keeps the hot path short.
            elif self._cb.fail_counter or self._cb.current_state != pybreaker.STATE_CLOSED:
                self._cb.call(_succeed)
        except (_Failure, pybreaker.CircuitBreakerError):
            pass
        finally:
            self._probing = False

    def settle(self) -> None:
        """An attempt ended without an outcome (cancelled): free the half-open probe slot."""
        self._probing = False

    def failed_status(self, status: int) -> bool:
        return status in self.settings.on_status


def _fail() -> None:
    raise _Failure


def _succeed() -> None:
    return None


class UpstreamPool:
    """Endpoint choice and health for one :class:`Upstream`."""

    def __init__(
        self,
        settings: Upstream,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.name = settings.name
        self.endpoints = tuple(Endpoint(url) for url in settings.endpoints)
        self._metrics = metrics
        self._clock = clock
        self._next = 0
        self.active = 0
        self.retries_in_flight = 0
        self.breaker = (
            Breaker(settings.name, settings.circuit_breaker, self._breaker_state, clock)
            if settings.circuit_breaker is not None
            else None
        )
        metrics.breaker_state(self.name, "closed")
        metrics.ejected(self.name, 0)

    def _breaker_state(self, state: str) -> None:
        self._metrics.breaker_state(self.name, state)

    def pick(self, tried: tuple[Endpoint, ...] = ()) -> Endpoint:
        """The next endpoint; a retry passes the endpoints its request already ``tried``.

        A retry goes to an endpoint not tried yet while one is healthy (Envoy's
        ``previous_hosts`` retry predicate): sent back to the endpoint that just failed, a
        request can spend every attempt on broken endpoints while a good one idles.
        """
        now = self._clock()
        endpoints = self.endpoints
        healthy: Sequence[Endpoint] = (
            [e for e in endpoints if e.ejected_until <= now]
            if self.settings.outlier_detection
            else endpoints
        )
        if not healthy:
            # Envoy's panic mode: with every endpoint ejected, using all beats refusing all.
            healthy = endpoints
        if tried:
            untried = [e for e in healthy if e not in tried]
            if untried:
                healthy = untried
        if len(healthy) == 1:
            return healthy[0]
        self._next = (self._next + 1) % len(healthy)
        if self.settings.load_balancing == "least_outstanding":
            # Ties broken by the round-robin cursor so equal endpoints still take turns.
            count = len(healthy)
            return min(
                (healthy[(self._next + i) % count] for i in range(count)),
                key=lambda e: e.outstanding,
            )
        return healthy[self._next]

    def record(self, endpoint: Endpoint, ok: bool) -> None:
        """Passive health: consecutive failures eject the endpoint for a while."""
        if ok:
            endpoint.consecutive_failures = 0
            return
        detection = self.settings.outlier_detection
        if detection is None:
            return
        endpoint.consecutive_failures += 1
        if endpoint.consecutive_failures < detection.consecutive_failures:
            return
        now = self._clock()
        ejected = sum(1 for e in self.endpoints if e.ejected_until > now)
        if (ejected + 1) * 100 > detection.max_ejected_percent * len(self.endpoints):
            return
        endpoint.ejections += 1
        endpoint.consecutive_failures = 0
        endpoint.ejected_until = now + min(
            detection.ejection_seconds * endpoint.ejections,
            max(_MAX_EJECTION_SECONDS, detection.ejection_seconds),
        )
        self._metrics.ejected(self.name, ejected + 1)

    def ejected_count(self) -> int:
        now = self._clock()
        return sum(1 for e in self.endpoints if e.ejected_until > now)

    def may_retry(self) -> bool:
        """Envoy's retry budget: retries in flight stay under a share of active requests."""
        policy = self.settings.retries
        allowed = max(policy.budget_min_concurrency, int(policy.budget_ratio * self.active))
        return self.retries_in_flight < allowed

    def admit(self) -> None:
        """Refuse a new request at once when ``max_requests`` are already in flight.

        Nothing waits in a queue: under overload the client is told to come back (Envoy's
        ``max_requests`` threshold), so memory and latency stay bounded.
        """
        if self.active >= self.settings.max_requests:
            self._metrics.upstream_error(self.name, "upstream_overflow")
            raise UpstreamOverflow(
                "upstream_overflow", headers=(("retry-after", "1"),), upstream=self.name
            )

    def unavailable(self) -> UpstreamUnavailable:
        return UpstreamUnavailable("no_healthy_endpoint", upstream=self.name)

    def snapshot(self) -> dict[str, object]:
        now = self._clock()
        return {
            "name": self.name,
            "load_balancing": self.settings.load_balancing,
            "breaker": self.breaker.state if self.breaker else "disabled",
            "endpoints": [
                {"url": e.url, "outstanding": e.outstanding, "ejected": e.ejected_until > now}
                for e in self.endpoints
            ],
        }
