"""Prometheus metrics of the service (base units, `_total` counters, bounded labels).

With several uvicorn workers, PROMETHEUS_MULTIPROC_DIR is set before any worker starts
(`cosrec serve` does it), every worker writes its values there, and /metrics sums them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# The `_created` series double the output and nothing here reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """All metrics of one app, registered in their own registry (tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "cosrec_http_requests_total",
            "HTTP requests by route, method and status code",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "cosrec_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "cosrec_inference_batch_size",
            "requests scored by one onnxruntime call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "cosrec_inference_duration_seconds",
            "duration of one onnxruntime call (one micro-batch)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_seconds = Histogram(
            "cosrec_redis_duration_seconds",
            "duration of one Redis round trip (a pipeline) by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_accepted = Counter(
            "cosrec_events_accepted_total", "events stored in Redis", registry=r
        )
        self.events_rejected = Counter(
            "cosrec_events_rejected_total",
            "events not stored, by reason (duplicate event_id, invalid body, redis unavailable)",
            ["reason"],
            registry=r,
        )
        self.unknown_items = Counter(
            "cosrec_events_unknown_items_total",
            "stored events whose item the serving model does not know",
            registry=r,
        )
        self.popularity = Counter(
            "cosrec_popularity_fallbacks_total",
            "recommendations answered from the popularity ranking, by reason",
            ["reason"],
            registry=r,
        )
        self.bundle_info = Gauge(
            "cosrec_bundle_info",
            "the serving bundle (value 1 for the model_version in use)",
            ["model_version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.last_reload = Gauge(
            "cosrec_bundle_last_reload_timestamp_seconds",
            "Unix time the serving bundle was loaded",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "cosrec_bundle_reloads_total",
            "bundle load attempts by result",
            ["result"],
            registry=r,
        )
        self._model_version: str | None = None

    def bundle_loaded(self, model_version: str, at: float) -> None:
        if self._model_version is not None and self._model_version != model_version:
            self.bundle_info.labels(self._model_version).set(0)
        self.bundle_info.labels(model_version).set(1)
        self._model_version = model_version
        self.last_reload.set(at)

    def exposition(self) -> tuple[bytes, str]:
        """The text format: this process's registry, or the sum over all workers."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
