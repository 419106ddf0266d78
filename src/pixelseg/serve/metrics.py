"""Prometheus metrics of one app, in a registry of its own (never the process-global one),
so that several apps in one process (tests, a second model) count separately.

- ``pixelseg_requests_total{endpoint, status}``: answered requests by route and HTTP status.
- ``pixelseg_request_latency_seconds{endpoint}``: time from request to response.
- ``pixelseg_errors_total{reason}``: refusals and failures by error code (``queue_full``, ...).
- ``pixelseg_batch_size``: images per forward pass.
- ``pixelseg_queue_depth``: requests waiting for a forward pass.
"""

from __future__ import annotations

__all__ = ["ServiceMetrics"]

#: Bucket bounds of the batch-size histogram (images per forward pass).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """The five metrics above and their text exposition (:meth:`render`)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pixelseg_requests_total",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pixelseg_request_latency_seconds",
            "Time from receiving a request to answering it, in seconds.",
            ["endpoint"],
            registry=self.registry,
        )
        self.errors = Counter(
            "pixelseg_errors_total",
            "Requests refused or failed, by error code.",
            ["reason"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "pixelseg_batch_size",
            "Images per forward pass.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "pixelseg_queue_depth",
            "Requests waiting for a forward pass.",
            registry=self.registry,
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_error(self, reason: str) -> None:
        self.errors.labels(reason=reason).inc()

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def set_queue_depth(self, waiting: int) -> None:
        self.queue_depth.set(waiting)

    def render(self) -> tuple[bytes, str]:
        """``(body, content type)`` of the Prometheus text exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
