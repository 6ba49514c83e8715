"""Scoring a micro-batch of recommendation requests: one Redis pipeline, one onnxruntime call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from redis.exceptions import RedisError

from service.bundle import Bundle
from service.metrics import Metrics
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


def top_n(scores: np.ndarray, n: int, excluded_columns: np.ndarray) -> np.ndarray:
    """Columns of the n best scores, best first, never an excluded one; no full sort.

    Mutates `scores`: the excluded columns become -inf.
    """
    available = len(scores)
    if len(excluded_columns):
        scores[excluded_columns] = -np.inf
        available -= int(np.count_nonzero(np.isneginf(scores)))
    k = min(n, available)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    best = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
    return best[np.argsort(-scores[best], kind="stable")]


def item_columns(bundle: Bundle, item_ids: Iterable[bytes]) -> np.ndarray:
    """Score columns (item index - 1) of the item ids the bundle knows; unknown ones dropped."""
    indices = np.fromiter(map(bundle.item_index.get, item_ids, repeat(0)), dtype=np.intp)
    return indices[indices > 0] - 1


def popularity_ranking(bundle: Bundle, n: int, excluded: set[str]) -> tuple[list[str], list[float]]:
    items: list[str] = []
    scores: list[float] = []
    for item, count in zip(bundle.popular_items, bundle.popular_scores, strict=True):
        if item not in excluded:
            items.append(item)
            scores.append(count)
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
        # one thread: onnxruntime calls stay serial, with the thread count the settings give
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
        self, bundle: Bundle, jobs: list[RecommendJob], histories: list[History]
    ) -> list[Recommendation]:
        L = bundle.sequence_length
        index = bundle.item_index
        results: list[Recommendation | None] = [None] * len(jobs)
        rows: list[int] = []
        items = np.zeros((len(jobs), L), dtype=np.int64)
        users = np.zeros(len(jobs), dtype=np.int64)
        for position, (job, history) in enumerate(zip(jobs, histories, strict=True)):
            known = [i for i in map(index.get, history.recent_items, repeat(0)) if i]
            user = bundle.user_index.get(job.user_id, 0)
            if not known and user == 0:
                self._metrics.popularity.labels("no_history").inc()
                results[position] = self._popular(bundle, job, SOURCE_POPULARITY)
                continue
            row = len(rows)
            tail = known[-L:]
            items[row, L - len(tail) :] = tail
            users[row] = user
            rows.append(position)
        if rows:
            started = time.perf_counter()
            inputs = (items[: len(rows)], users[: len(rows)])
            if len(rows) >= OFFLOAD_MIN_ROWS:
                # onnxruntime releases the GIL: HTTP keeps flowing on the event loop meanwhile
                loop = asyncio.get_running_loop()
                scores = await loop.run_in_executor(self._inference_thread, bundle.score, *inputs)
            else:
                scores = bundle.score(*inputs)
            self._metrics.inference_seconds.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(len(rows))
            for row, position in enumerate(rows):
                results[position] = self._ranked(
                    bundle, jobs[position], histories[position], scores[row]
                )
        return results  # type: ignore[return-value]  # every position is filled above

    @staticmethod
    def _ranked(
        bundle: Bundle, job: RecommendJob, history: History, scores: np.ndarray
    ) -> Recommendation:
        excluded = item_columns(bundle, map(str.encode, job.exclude))
        if history.seen_items:
            excluded = np.concatenate([excluded, item_columns(bundle, history.seen_items)])
        columns = top_n(scores, job.n, excluded)
        item_ids = bundle.item_ids
        return Recommendation(
            [item_ids[c] for c in columns.tolist()],
            scores[columns].tolist(),
            SOURCE_MODEL,
            bundle.model_version,
        )
