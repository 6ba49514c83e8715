"""Scoring a micro-batch of recommendation requests: one Redis pipeline, one onnxruntime call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
from redis.exceptions import RedisError

from contract.bundle import Bundle
from contract.ids import GENERIC_USER_INDEX, input_rows
from service.metrics import Metrics
from service.ranking import Exclusions, RankedRows, exclusions, top_n_rows
from service.store import History, RedisStore

# Smaller batches run on the event loop: handing one row to a thread costs more latency (a
# wake-up of the other CPU) than the overlap with HTTP work gains.
OFFLOAD_MIN_ROWS = 4

SOURCE_MODEL = "model"
SOURCE_POPULARITY = "popularity"  # an unknown user with no history the model can read
SOURCE_FALLBACK = "popularity_fallback"  # Redis was unreachable: no history could be read


class RedisUnavailableError(Exception):
    """Redis did not answer; the message says what failed."""


@dataclass(frozen=True)
class RecommendJob:
    user_id: str
    n: int
    exclude_seen: bool
    exclude: tuple[str, ...]


@dataclass(frozen=True)
class Recommendation:
    item_ids: list[str]
    scores: list[float]
    source: str
    model_version: str


def popularity_ranking(bundle: Bundle, n: int, excluded: set[str]) -> tuple[list[str], list[float]]:
    items: list[str] = []
    scores: list[float] = []
    popularity = bundle.manifest.popularity
    for item, count in zip(popularity.items, popularity.counts, strict=True):
        if item not in excluded:
            items.append(item)
            scores.append(float(count))
            if len(items) == n:
                break
    return items, scores


class Recommender:
    """Turns a batch of jobs into recommendations with the bundle current at batch start."""

    def __init__(
        self,
        current_bundle: Callable[[], Bundle],
        store: RedisStore,
        metrics: Metrics,
        window_factor: int,
        redis_fallback: bool,
    ) -> None:
        self._current_bundle = current_bundle
        self._store = store
        self._metrics = metrics
        self._window_factor = window_factor
        self._redis_fallback = redis_fallback
        # one thread: offloaded batches run one after the other, each with the settings' ORT
        # threads (a small batch may run on the event loop meanwhile: Session.run is
        # thread-safe)
        self._inference_thread = ThreadPoolExecutor(1, thread_name_prefix="onnxruntime")

    def close(self) -> None:
        self._inference_thread.shutdown(wait=True)

    async def process(self, jobs: list[RecommendJob]) -> list[Recommendation]:
        # One reference for the whole batch: a reload swaps the holder, never this bundle.
        bundle = self._current_bundle()
        window = bundle.sequence_length * self._window_factor
        try:
            histories = await self._store.read([(j.user_id, window, j.exclude_seen) for j in jobs])
        except (RedisError, OSError) as error:
            if not self._redis_fallback:
                raise RedisUnavailableError(f"redis unavailable: {error}") from error
            self._metrics.popularity.labels("redis_unavailable").inc(len(jobs))
            return [self._popular(bundle, job, SOURCE_FALLBACK) for job in jobs]
        return await self._score(bundle, jobs, histories)

    def _popular(self, bundle: Bundle, job: RecommendJob, source: str) -> Recommendation:
        items, scores = popularity_ranking(bundle, job.n, set(job.exclude))
        return Recommendation(items, scores, source, bundle.model_version)

    async def _score(
        self, bundle: Bundle, jobs: list[RecommendJob], histories_read: list[History]
    ) -> list[Recommendation]:
        vocabulary = bundle.items
        histories = [vocabulary.lookup_utf8(history.recent_items) for history in histories_read]
        all_items = input_rows(histories, bundle.sequence_length)
        all_users = np.fromiter(
            (bundle.users.get(job.user_id, GENERIC_USER_INDEX) for job in jobs),
            dtype=np.int64,
            count=len(jobs),
        )
        results: list[Recommendation | None] = [None] * len(jobs)
        rows: list[int] = []
        for position, job in enumerate(jobs):
            if all_users[position] == GENERIC_USER_INDEX and not all_items[position].any():
                self._metrics.popularity.labels("no_history").inc()
                results[position] = self._popular(bundle, job, SOURCE_POPULARITY)
            else:
                rows.append(position)
        if not rows:
            return results  # type: ignore[return-value]  # every job went to popularity
        items, users = all_items[rows], all_users[rows]
        excluded = exclusions(
            vocabulary.utf8_positions, [_excluded_ids(jobs[p], histories_read[p]) for p in rows]
        )
        n = np.fromiter((jobs[p].n for p in rows), dtype=np.intp, count=len(rows))
        work = partial(_score_and_rank, bundle, items, users, n, excluded)
        if len(rows) >= OFFLOAD_MIN_ROWS:
            # onnxruntime and numpy release the GIL: HTTP keeps flowing on the event loop
            loop = asyncio.get_running_loop()
            ranked, inference_s = await loop.run_in_executor(self._inference_thread, work)
        else:
            ranked, inference_s = work()
        self._metrics.inference_seconds.observe(inference_s)
        self._metrics.batch_size.observe(len(rows))
        item_ids = bundle.manifest.items
        columns, scores = ranked.columns.tolist(), ranked.scores.tolist()
        for row, (position, count) in enumerate(zip(rows, ranked.counts.tolist(), strict=True)):
            results[position] = Recommendation(
                [item_ids[c] for c in columns[row][:count]],
                scores[row][:count],
                SOURCE_MODEL,
                bundle.model_version,
            )
        return results  # type: ignore[return-value]  # every position is filled above


def _excluded_ids(job: RecommendJob, history: History) -> list[bytes]:
    """The ids a job's answer must leave out: its `exclude` list and, if asked, the seen."""
    seen = history.seen_items or []
    return [*map(str.encode, job.exclude), *seen] if job.exclude else seen


def _score_and_rank(
    bundle: Bundle, items: np.ndarray, users: np.ndarray, n: np.ndarray, excluded: Exclusions
) -> tuple[RankedRows, float]:
    """The ranked rows and the seconds onnxruntime took."""
    started = time.perf_counter()
    scores = bundle.score(items, users)
    inference_s = time.perf_counter() - started
    return top_n_rows(scores, n, excluded), inference_s
