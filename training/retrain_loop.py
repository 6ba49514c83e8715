"""`cosrec retrain` running by itself: collect the new events every poll, and run a retrain
cycle every period and/or once enough new events have come; Prometheus metrics of it all."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from training.retrain import CycleReport, Log, RetrainSettings, collect_events, run_cycle

log = logging.getLogger("cosrec.retrain")


@dataclass(frozen=True)
class Schedule:
    every_s: float | None  # a cycle at least this often (None: only by events)
    min_new_events: int | None  # a cycle once this many new events came (None: only by time)
    poll_s: float = 30.0  # how often the log is read for new events


class LoopMetrics:
    def __init__(self, registry: CollectorRegistry, period_s: float | None) -> None:
        self.last_success = Gauge(
            "cosrec_retrain_last_success_timestamp_seconds",
            "Unix time the last retrain cycle ended without error",
            registry=registry,
        )
        self.period = Gauge(
            "cosrec_retrain_period_seconds",
            "the loop's period (0: cycles only by new events); alert when no success in 2x",
            registry=registry,
        )
        self.period.set(period_s or 0)
        self.cycle_seconds = Histogram(
            "cosrec_retrain_cycle_duration_seconds",
            "duration of one retrain cycle",
            buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
            registry=registry,
        )
        self.holdout_map = Gauge(
            "cosrec_retrain_holdout_map",
            "holdout MAP of the last cycle, by model (candidate, serving)",
            ["model"],
            registry=registry,
        )
        self.decisions = Counter(
            "cosrec_retrain_decisions_total",
            "retrain cycles by decision (promoted, refused, skipped)",
            ["decision"],
            registry=registry,
        )
        self.failures = Counter(
            "cosrec_retrain_failures_total", "retrain cycles that raised", registry=registry
        )
        self.events_read = Counter(
            "cosrec_retrain_events_read_total", "events read from the log", registry=registry
        )

    def record(self, report: CycleReport) -> None:
        self.last_success.set(time.time())
        self.cycle_seconds.observe(report.seconds)
        self.decisions.labels(report.decision).inc()
        if report.holdout is not None:
            self.holdout_map.labels("candidate").set(report.holdout.candidate["map"])
            if report.holdout.serving is not None:
                self.holdout_map.labels("serving").set(report.holdout.serving["map"])


def run_loop(
    settings: RetrainSettings,
    schedule: Schedule,
    metrics_port: int | None = None,
    echo: Log = lambda _: None,
    cycles: int | None = None,
) -> None:
    """Run until stopped (or `cycles` cycles, for tests). A failed cycle is logged, counted
    and tried again at the next trigger; the serving bundle is never touched by a failure."""
    registry = CollectorRegistry()
    metrics = LoopMetrics(registry, schedule.every_s)
    if metrics_port is not None:
        start_http_server(metrics_port, registry=registry)
    pending, last_cycle, done = 0, float("-inf"), 0
    while cycles is None or done < cycles:
        try:
            new, _ = collect_events(settings)
            pending += new
            metrics.events_read.inc(new)
            due_by_time = schedule.every_s is not None and (
                time.monotonic() - last_cycle >= schedule.every_s
            )
            due_by_events = schedule.min_new_events is not None and (
                pending >= schedule.min_new_events
            )
            if due_by_time or due_by_events:
                last_cycle = time.monotonic()
                report = run_cycle(settings, echo, pending)
                metrics.events_read.inc(report.events_read - pending)  # the polls counted theirs
                metrics.record(report)
                echo(f"cycle: {report.decision} ({report.reason}); serving {report.serving}")
                pending, done = 0, done + 1
        except Exception:  # the loop outlives any one cycle: the next trigger tries again
            log.exception("retrain cycle failed")
            metrics.failures.inc()
            done += 1 if cycles is not None else 0
        time.sleep(schedule.poll_s)
