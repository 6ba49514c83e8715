"""One worker's services: built when the app starts (its lifespan), closed when it stops."""

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import multiprocess
from redis.exceptions import RedisError

from service.batching import GreedyBatcher
from service.catalogue import (
    EMPTY,
    CatalogueCache,
    CatalogueStore,
    ItemAttributes,
    catalogue_of,
    read_catalogue_file,
)
from service.experiments import Experiment, RecommendationLog, ShadowScorer
from service.ingest import EventWriter
from service.memory import MemoryWatch
from service.metrics import Metrics, multiprocess_dir
from service.recommender import Recommendation, Recommender, RecommendJob
from service.reloading import BundleHolder
from service.rules import Indexes, Rules, deployment_rules
from service.settings import Settings
from service.store import RedisStore, connect

log = logging.getLogger("cosrec.service")
# how long start-up waits for Redis to hand over the catalogue (else the watch retries)
CATALOGUE_START_TIMEOUT_S = 5.0
GC_YOUNG_THRESHOLD = 20_000  # net new objects between young collections (default 700)


@dataclass(frozen=True)
class Services:
    """What the routes use (`app.state.services`), one set per worker process."""

    holder: BundleHolder  # the serving bundle (variant 0)
    store: RedisStore
    recommender: Recommender
    recommendations: GreedyBatcher[RecommendJob, Recommendation]
    writer: EventWriter
    memory: MemoryWatch
    metrics: Metrics
    recommend_deadline_s: float
    events_deadline_s: float
    holders: list[BundleHolder]  # every variant's, the serving bundle's first
    variant_names: list[str]
    experiment: Experiment
    default_rules: Rules
    catalogue: CatalogueCache
    catalogue_store: CatalogueStore
    indexes: Indexes
    recorder: RecommendationLog | None
    shadow: ShadowScorer | None

    def bundles(self) -> list:
        bundles = [holder.current for holder in self.holders]
        if self.shadow is not None:
            bundles.append(self.shadow.holder.current)
        return bundles

    async def reindex(self) -> None:
        """Index every loaded bundle over the current catalogue copy, off the event loop
        (after start-up, a catalogue change, a bundle reload): no request builds one."""
        await self.indexes.prepare(self.bundles())


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build `app.state.services` from `app.state.settings` and `.metrics`; close them at exit."""
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    specs = settings.variant_specs()

    def holder_of(path: Path, primary: bool) -> BundleHolder:
        return BundleHolder(
            path, settings.device, settings.ort_threads, metrics, primary, settings.precision
        )

    holders = [holder_of(spec.path, primary=k == 0) for k, spec in enumerate(specs)]
    holder = holders[0]
    names = [spec.name for spec in specs]
    client = connect(settings)
    store = RedisStore(
        client,
        settings.key_prefix,
        settings.retention(),
        settings.redis_timeout_s,
        metrics,
        settings.replica_acks,
        settings.replica_ack_timeout_ms,
    )
    file_items: list[tuple[str, ItemAttributes]] | None = None
    if settings.catalogue is not None:
        file_items = read_catalogue_file(settings.catalogue, settings.max_id_length)
    catalogue_store = CatalogueStore(
        client, settings.key_prefix, settings.max_catalogue_items, settings.redis_timeout_s
    )
    catalogue = CatalogueCache(
        catalogue_store, metrics, catalogue_of(file_items) if file_items else EMPTY
    )
    indexes = Indexes(lambda: catalogue.current, settings.catalogue_unlisted == "allow")
    shadow = None
    if settings.shadow_bundle is not None:
        shadow_holder = holder_of(settings.shadow_bundle, primary=False)
        shadow = ShadowScorer(shadow_holder, indexes, metrics, settings.shadow_sample)
    recommender = Recommender(
        lambda: [h.current for h in holders],
        store,
        metrics,
        settings.history_window_factor,
        settings.redis_fallback,
        indexes,
        shadow,
        names,
    )
    wait_s = settings.max_wait_ms / 1000
    recommendations = GreedyBatcher(
        recommender.process,
        settings.max_batch,
        wait_s,
        settings.batches_in_flight,
        max_queue=settings.max_queued_requests,
        group=lambda job: job.variant,  # one model a batch: a whole batch to each call
    )
    writer = EventWriter(
        store,
        lambda: holder.current,
        metrics,
        wait_s,
        settings.max_queued_requests,
        settings.max_batch_events,
        names,
    )
    recorder = None
    if settings.recording():
        recorder = RecommendationLog(
            client,
            settings.key_prefix,
            settings.max_recommendations_per_user,
            settings.user_ttl_s,
            settings.redis_timeout_s,
            metrics,
        )
    default_rules = deployment_rules(settings)
    services = Services(
        holder,
        store,
        recommender,
        recommendations,
        writer,
        MemoryWatch(store, metrics, settings.redis_memory_warn_ratio),
        metrics,
        settings.recommend_deadline_ms / 1000,
        settings.events_deadline_ms / 1000,
        holders,
        names,
        Experiment(names, [spec.weight for spec in specs], settings.experiment_salt),
        default_rules,
        catalogue,
        catalogue_store,
        indexes,
        recorder,
        shadow,
    )
    every_holder = [*holders, *([shadow.holder] if shadow is not None else [])]
    for watched in every_holder:  # a bundle swapped in is indexed off the event loop
        watched.after_reload = services.reindex
    try:  # the catalogue as Redis has it, before the first request (else the watch retries)
        async with asyncio.timeout(CATALOGUE_START_TIMEOUT_S):
            await catalogue.start(file_items)
    except (RedisError, OSError) as error:
        log.warning("catalogue: Redis did not answer at start-up (%s); retrying", error)
    await services.reindex()
    services.recommendations.start()
    services.writer.start()
    app.state.services = services
    # Everything made so far (modules, the app, the bundle) lives as long as the process:
    # out of the collector's reach, a full collection no longer walks it (measured here:
    # full collections of ~50 ms each, the tail of /recommend's latency, before this).
    # Collect first, so start-up's garbage is not kept forever.
    gc.collect()
    gc.freeze()
    # A young collection every GC_YOUNG_THRESHOLD net new objects, not 700: /recommend makes
    # ~80 a request, and with 64 requests in flight each collection walked their live objects
    # (~80 us of CPU a request in collections, measured; 20,000: +7.6% requests a second at
    # c=64 in a probe run: docs/service.md, Experiments).
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    watchers = []
    if settings.reload_poll_s > 0:
        for watched in every_holder:
            watchers.append(asyncio.create_task(watched.watch(settings.reload_poll_s)))
    watchers.append(
        asyncio.create_task(
            catalogue.watch(settings.catalogue_poll_s, file_items, services.reindex)
        )
    )
    if recorder is not None:
        watchers.append(asyncio.create_task(recorder.run()))
    if shadow is not None:
        watchers.append(asyncio.create_task(shadow.run()))
    if settings.redis_memory_poll_s > 0:
        watchers.append(asyncio.create_task(services.memory.watch(settings.redis_memory_poll_s)))
    try:
        yield
    finally:
        await services.recommendations.stop()  # no answer after this: none left to record
        if recorder is not None:  # what was answered is recorded, if Redis allows, before exit
            await recorder.drain(settings.redis_timeout_s)
        for watcher in watchers:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await services.writer.stop()
        recommender.close()
        if shadow is not None:
            shadow.close()
        await client.aclose()
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())
