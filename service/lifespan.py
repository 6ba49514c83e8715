"""One worker's services: built when the app starts (its lifespan), closed when it stops."""

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import multiprocess

from service.batching import GreedyBatcher
from service.ingest import EventWriter
from service.metrics import Metrics, multiprocess_dir
from service.recommender import Recommendation, Recommender, RecommendJob
from service.reloading import BundleHolder
from service.settings import Settings
from service.store import RedisStore, connect


@dataclass(frozen=True)
class Services:
    """What the routes use (`app.state.services`), one set per worker process."""

    holder: BundleHolder
    store: RedisStore
    recommendations: GreedyBatcher[RecommendJob, Recommendation]
    writer: EventWriter


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build `app.state.services` from `app.state.settings` and `.metrics`; close them at exit."""
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    holder = BundleHolder(settings.bundle, settings.device, settings.ort_threads, metrics)
    client = connect(settings)
    store = RedisStore(
        client,
        settings.key_prefix,
        settings.max_history,
        settings.max_event_ids,
        settings.redis_timeout_s,
        metrics,
    )
    recommender = Recommender(
        lambda: holder.current,
        store,
        metrics,
        settings.history_window_factor,
        settings.redis_fallback,
    )
    wait_s = settings.max_wait_ms / 1000
    services = Services(
        holder,
        store,
        GreedyBatcher(recommender.process, settings.max_batch, wait_s, settings.batches_in_flight),
        EventWriter(store, lambda: holder.current, metrics, settings.max_batch, wait_s),
    )
    services.recommendations.start()
    services.writer.start()
    app.state.services = services
    # Everything made so far (modules, the app, the bundle) lives as long as the process:
    # out of the collector's reach, a full collection no longer walks it (measured here:
    # full collections of ~50 ms each, the tail of /recommend's latency, before this).
    # Collect first, so start-up's garbage is not kept forever.
    gc.collect()
    gc.freeze()
    watcher = None
    if settings.reload_poll_s > 0:
        watcher = asyncio.create_task(holder.watch(settings.reload_poll_s))
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await services.recommendations.stop()
        await services.writer.stop()
        recommender.close()
        await client.aclose()
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())
