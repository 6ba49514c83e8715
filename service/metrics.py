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
from prometheus_client.core import GaugeMetricFamily

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
        self.shed = Counter(
            "cosrec_requests_shed_total",
            "requests dropped unserved by route and reason (overloaded, client_gone)",
            ["route", "reason"],
            registry=r,
        )
        self.redis_memory_used = Gauge(
            "cosrec_redis_memory_used_bytes",
            "Redis used_memory (on a cluster: the fullest primary)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.redis_memory_max = Gauge(
            "cosrec_redis_memory_max_bytes",
            "Redis maxmemory (0: no limit)",
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
        # issue 14: the catalogue, business rules and experiments (variants come from the
        # settings and event types from a fixed set: every label set is bounded)
        self.recommendations = Counter(
            "cosrec_recommendations_total",
            "recommendations served, by variant and source",
            ["variant", "source"],
            registry=r,
        )
        self.recommended_items = Counter(
            "cosrec_recommended_items_total",
            "items recommended, by variant and why (model; popularity: topped up)",
            ["variant", "reason"],
            registry=r,
        )
        self.attributed = Counter(
            "cosrec_attributed_interactions_total",
            "stored events naming a recommendation_id, by its variant and the event type",
            ["variant", "type"],
            registry=r,
        )
        self.unrecorded = Counter(
            "cosrec_recommendations_unrecorded_total",
            "recommendations not written to the user's recommendations stream, by reason",
            ["reason"],
            registry=r,
        )
        self.shadow_overlap = Histogram(
            "cosrec_shadow_top10_overlap",
            "share of the served top 10 (model items) the shadow bundle ranks in its top 10",
            ["variant"],
            buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.shadow = Counter(
            "cosrec_shadow_requests_total",
            "requests sampled for the shadow bundle, by result (scored, dropped, failed)",
            ["result"],
            registry=r,
        )
        self.catalogue_items = Gauge(
            "cosrec_catalogue_items",
            "items in the worker's copy of the catalogue",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.catalogue_refreshed = Gauge(
            "cosrec_catalogue_last_refresh_timestamp_seconds",
            "Unix time the catalogue copy was last checked against Redis (oldest worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.catalogue_refresh_failures = Counter(
            "cosrec_catalogue_refresh_failures_total",
            "catalogue refreshes that failed (Redis unreachable); the copy serves on",
            registry=r,
        )
        self.model_version: str | None = None

    def bundle_loaded(self, model_version: str, at: float) -> None:
        self.model_version = model_version
        self.last_reload.set(at)

    def exposition(self) -> tuple[bytes, str]:
        """The text format: this process's registry, or the sum over all workers; plus
        `cosrec_bundle_info` of the answering worker."""
        directory = multiprocess_dir()
        if directory is None:
            registry = self.registry
        else:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
        info = _BundleInfo(self.model_version)
        return generate_latest(registry) + generate_latest(info), CONTENT_TYPE_LATEST


class _BundleInfo:
    """`cosrec_bundle_info{model_version}` 1 for the serving bundle, made at scrape time: one
    series, never one per version ever loaded (a Gauge in the multiprocess files would keep
    every version a worker had)."""

    def __init__(self, model_version: str | None) -> None:
        self.model_version = model_version

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "cosrec_bundle_info",
            "the serving bundle of the answering worker",
            labels=["model_version"],
        )
        if self.model_version is not None:
            family.add_metric([self.model_version], 1)
        return [family]
