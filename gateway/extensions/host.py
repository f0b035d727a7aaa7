"""Runs the extensions of one point in order, each under its timeout, and combines their answers.

The first denial stops the point (no later extension runs), as Uber's "go online" check does:
any one safety extension can keep a driver offline. Headers accumulate and later extensions see
them; the last upstream named wins. An extension that raises (any ``BaseException``), overruns
its timeout or answers something that is not an :class:`Outcome` is an error: the point's
``on_error`` then either skips it (``fail_open``) or refuses the request with 503
``extension_failed`` (``fail_closed``). The deadline holds even for an extension that ignores
its cancellation: each call runs in a task of its own, abandoned when its time is up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.extensions.api import Call, Extension, Outcome
from gateway.extensions.claims import ReadOnlyClaims
from gateway.extensions.metrics import PointMetrics

__all__ = ["FAILED", "ExtensionHost", "OnError", "PointPlan", "Step", "Verdict"]

log = logging.getLogger("doma.gateway.extensions")

OnError = Literal["fail_open", "fail_closed"]
FAILED = Outcome(status=503, reason="extension_failed")


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    extension: Extension
    timeout: float
    metrics: PointMetrics


@dataclass(frozen=True, slots=True)
class PointPlan:
    name: str
    on_error: OnError
    steps: tuple[Step, ...]
    # Domain points ("rides.pre_ride") run for their domain's routes only, or the listed ones.
    domain: str | None = None
    routes: frozenset[str] | None = None

    def applies(self, domain: str, route: str) -> bool:
        if self.domain is None:
            return True
        return self.domain == domain and (self.routes is None or route in self.routes)


@dataclass(frozen=True, slots=True)
class Verdict:
    denial: Outcome | None = None
    extension: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    upstream: str | None = None


_NOTHING = Verdict()


class ExtensionHost:
    """Every configured point's plan; built with the routes and replaced on reload."""

    def __init__(self, plans: Mapping[str, PointPlan], upstreams: frozenset[str]):
        self.plans = dict(plans)
        self._upstreams = upstreams
        self._per_route: dict[tuple[str, str], tuple[PointPlan, ...]] = {}
        self._pre_upstream = self.plans.get("pre_upstream")
        self._domain_plans = tuple(p for p in self.plans.values() if p.domain is not None)
        # Shared by every route's endpoint: a cached token's claims are copied once.
        self.claims = ReadOnlyClaims()
        # Calls past their deadline, cancelled but maybe still running: held until they end,
        # since the event loop keeps only a weak reference to a task.
        self._abandoned: set[asyncio.Task[tuple[object, str | None]]] = set()

    def plan(self, point: str) -> PointPlan | None:
        return self.plans.get(point)

    def request_plans(self, domain: str, route: str) -> tuple[PointPlan, ...]:
        """pre_upstream, then the domain points that apply to this route, in declared order."""
        key = (domain, route)
        found = self._per_route.get(key)
        if found is None:
            plans = [self._pre_upstream] if self._pre_upstream is not None else []
            plans += [p for p in self._domain_plans if p.applies(domain, route)]
            found = self._per_route[key] = tuple(plans)
        return found

    async def run(self, plan: PointPlan, call: Call) -> Verdict:
        headers: list[tuple[str, str]] = []
        upstream: str | None = None
        for step in plan.steps:
            outcome, kind = await self._call(step, call)
            if kind is not None:
                step.metrics.errors[kind].inc()
                step.metrics.calls["timeout" if kind == "timeout" else "error"].inc()
                log.warning(
                    "extension %s failed at %s (%s)",
                    step.name,
                    plan.name,
                    kind,
                    extra={"event": "extension_error", "extension": step.name, "kind": kind},
                )
                if plan.on_error == "fail_closed":
                    return Verdict(FAILED, step.name)
                continue
            if outcome is None:
                step.metrics.calls["continue"].inc()
                continue
            if outcome.denied:
                step.metrics.calls["deny"].inc()
                return Verdict(outcome, step.name)
            step.metrics.calls["continue"].inc()
            if outcome.headers:
                headers.extend(outcome.headers)
                merged = {**call.headers, **dict(outcome.headers)}
                call = dataclasses.replace(call, headers=merged)
            if outcome.upstream is not None:
                upstream = outcome.upstream
                call = dataclasses.replace(call, upstream=upstream)
        if not headers and upstream is None:
            return _NOTHING
        return Verdict(None, "", tuple(headers), upstream)

    async def _call(self, step: Step, call: Call) -> tuple[Outcome | None, str | None]:
        started = time.perf_counter()
        # A task of its own, so the deadline holds even for an extension that swallows its
        # cancellation: the request moves on, and the task is cancelled and left to end alone.
        task = asyncio.create_task(_guarded(step, call))
        try:
            done, _ = await asyncio.wait((task,), timeout=step.timeout)
        except asyncio.CancelledError:
            self._abandon(task)  # the request itself was cancelled
            raise
        finally:
            step.metrics.latency.observe(time.perf_counter() - started)
        if not done:
            self._abandon(task)
            return None, "timeout"
        outcome, failure = task.result()
        if failure is not None:
            return None, failure
        if outcome is not None and not isinstance(outcome, Outcome):
            return None, "invalid_outcome"
        if outcome is not None and outcome.upstream is not None:
            if outcome.upstream not in self._upstreams:
                log.warning("extension %s named unknown upstream %r", step.name, outcome.upstream)
                return None, "invalid_outcome"
            if call.point == "post_response":
                return None, "invalid_outcome"
        return outcome, None

    def _abandon(self, task: asyncio.Task[tuple[object, str | None]]) -> None:
        task.cancel()
        if not task.done():
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)


async def _guarded(step: Step, call: Call) -> tuple[object, str | None]:
    """The extension's answer, or the kind of its failure; whatever it raises stays here.

    ``SystemExit`` and ``KeyboardInterrupt`` included: escaping a task, they would stop the
    event loop, and so every request of the process. A ``CancelledError`` the extension raises
    by itself is a failure like any other; only the host's own cancellation (past the deadline,
    when nobody waits for the answer any more) ends the task as cancelled.
    """
    try:
        return await step.extension(call), None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("extension %s raised CancelledError", step.name)
        return None, "exception"
    except GeneratorExit:
        raise
    except BaseException:
        # The kind of failure only: the request (tokens, headers) stays out of the log.
        log.exception("extension %s raised", step.name)
        return None, "exception"
