"""Prometheus metrics of extensions: calls by outcome, errors by kind, latency.

Registered by the composition root whether or not any extension is configured, so the set of
names is stable; children are bound once per extension and point when the host is built.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["ExtensionMetrics", "PointMetrics"]

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
OUTCOMES = ("continue", "deny", "error", "timeout")


class PointMetrics:
    """The bound children for one extension at one point."""

    __slots__ = ("calls", "errors", "latency")

    def __init__(self, metrics: ExtensionMetrics, extension: str, point: str):
        self.calls = {o: metrics.calls.labels(extension, point, o) for o in OUTCOMES}
        self.errors = {
            kind: metrics.errors.labels(extension, point, kind)
            for kind in ("exception", "timeout", "invalid_outcome")
        }
        self.latency = metrics.latency.labels(extension, point)


class ExtensionMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.calls = Counter(
            "doma_gateway_extension_calls",
            "Extension calls by extension, point and outcome (continue, deny, error, timeout).",
            ["extension", "point", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "doma_gateway_extension_errors",
            "Extension calls that failed, by extension, point and kind "
            "(exception, timeout, invalid_outcome); the point's on_error decided the request.",
            ["extension", "point", "kind"],
            registry=registry,
        )
        self.latency = Histogram(
            "doma_gateway_extension_duration_seconds",
            "Time one extension took at one point.",
            ["extension", "point"],
            buckets=_BUCKETS,
            registry=registry,
        )

    def bind(self, extension: str, point: str) -> PointMetrics:
        return PointMetrics(self, extension, point)
