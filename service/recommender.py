"""Scoring a micro-batch of recommendation requests: one Redis pipeline, one onnxruntime call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from redis.exceptions import RedisError

from contract.bundle import Bundle
from contract.ids import GENERIC_USER_INDEX
from service.experiments import ShadowScorer, shadow_job
from service.metrics import Metrics
from service.model_answers import excluded_ids, model_answers, model_input
from service.ranking import exclusions
from service.rules import (
    NO_RULES,
    Answer,
    CatalogueIndex,
    Indexes,
    Rules,
    popularity_answer,
    top_up,
)
from service.store import History, RedisStore

# Smaller batches run on the event loop: handing one row to a thread costs more latency (a
# wake-up of the other CPU) than the overlap with HTTP work gains.
OFFLOAD_MIN_ROWS = 4
# The Redis read of a batch must end this long before its earliest deadline, leaving time to
# score and rank (a batch of 64 takes ~6 ms in onnxruntime on the slower CPUs measured here).
SCORING_ALLOWANCE_S = 0.025

SOURCE_MODEL = "model"
SOURCE_POPULARITY = "popularity"  # an unknown user with no history the model can read
SOURCE_FALLBACK = "popularity_fallback"  # no history could be read in time (Redis down or slow)


class RedisUnavailableError(Exception):
    """Redis did not answer in time, and the settings say not to fall back (503)."""


@dataclass(frozen=True)
class RecommendJob:
    user_id: str
    n: int
    exclude_seen: bool
    exclude: tuple[str, ...]
    deadline: float  # loop time by which the answer is due
    rules: Rules = NO_RULES
    variant: int = 0  # index into the Recommender's bundles (the experiment's variants)


@dataclass(frozen=True)
class Recommendation:
    item_ids: list[str]
    scores: list[float]
    source: str
    model_version: str
    # why the popularity ranking answered (no_history, redis_unavailable, deadline): counted by
    # the route for the answer it sends, so a job answered twice is counted once
    popularity_reason: str | None = None
    # the first `from_model` items are the model's; the rest topped the answer up (popularity)
    from_model: int = 0


class Recommender:
    """Turns a batch of jobs into recommendations, each job with its variant's bundle as it was
    at batch start, honouring the rules (service.rules) on every path."""

    def __init__(
        self,
        current_bundles: Callable[[], Sequence[Bundle]],
        store: RedisStore,
        metrics: Metrics,
        window_factor: int,
        redis_fallback: bool,
        indexes: Indexes,
        shadow: ShadowScorer | None = None,
        variant_names: Sequence[str] = ("A",),
    ) -> None:
        self._current_bundles = current_bundles
        self._store = store
        self._metrics = metrics
        self._window_factor = window_factor
        self._redis_fallback = redis_fallback
        self._indexes = indexes
        self._shadow = shadow
        self._variant_names = list(variant_names)
        # one thread: offloaded batches run one after the other, each with the settings' ORT
        # threads (a small batch may run on the event loop meanwhile: Session.run is
        # thread-safe)
        self._inference_thread = ThreadPoolExecutor(1, thread_name_prefix="onnxruntime")

    def close(self) -> None:
        self._inference_thread.shutdown(wait=True)

    async def process(self, jobs: list[RecommendJob]) -> list[Recommendation]:
        # One reference per variant for the whole batch: a reload swaps the holder, never these.
        bundles = self._current_bundles()
        windows = [bundle.sequence_length * self._window_factor for bundle in bundles]
        # Until the latest deadline of the batch: a job due earlier is answered at its own
        # deadline by its route (from popularity) and does not cut the others' read short.
        loop_now = asyncio.get_running_loop().time()
        remaining = max(job.deadline for job in jobs) - loop_now - SCORING_ALLOWANCE_S
        try:
            histories = await self._store.read(
                [(j.user_id, windows[j.variant], j.exclude_seen) for j in jobs], remaining
            )
        except (RedisError, OSError) as error:  # TimeoutError is an OSError
            if not self._redis_fallback:
                raise RedisUnavailableError(str(error) or type(error).__name__) from error
            reason = "deadline" if isinstance(error, TimeoutError) else "redis_unavailable"
            return self.fallbacks(jobs, reason, bundles)
        now = time.time()
        by_variant: dict[int, list[int]] = {}
        for position, job in enumerate(jobs):
            by_variant.setdefault(job.variant, []).append(position)
        parts = [
            self._prepare(
                bundles[variant], [jobs[p] for p in mine], [histories[p] for p in mine], now
            )
            for variant, mine in by_variant.items()
        ]
        # every variant's model work in one hand-off (the service's batches hold one variant's
        # jobs: service.batching's group, so a call scores the whole batch)
        await self._rank(parts)
        results: list[Recommendation | None] = [None] * len(jobs)
        for part, mine in zip(parts, by_variant.values(), strict=True):
            for position, answer in zip(mine, self._finish(part, now), strict=True):
                results[position] = answer
        return results  # type: ignore[return-value]  # every job has a variant

    def fallbacks(
        self, jobs: list[RecommendJob], reason: str, bundles: Sequence[Bundle] | None = None
    ) -> list[Recommendation]:
        """Popularity for jobs whose history could not be read in time (`reason`); the rules
        hold, the seen items cannot be known."""
        bundles = bundles or self._current_bundles()
        now = time.time()
        return [
            self._popular(bundles[job.variant], job, SOURCE_FALLBACK, reason, set(job.exclude), now)
            for job in jobs
        ]

    def past_deadline(self, job: RecommendJob) -> Recommendation:
        """The answer to a job whose deadline passed before its batch answered it."""
        if not self._redis_fallback:
            raise RedisUnavailableError("no answer by the deadline")
        return self.fallbacks([job], "deadline")[0]

    def _popular(
        self,
        bundle: Bundle,
        job: RecommendJob,
        source: str,
        reason: str,
        excluded: set[str],
        now: float,
    ) -> Recommendation:
        answer = popularity_answer(self._indexes.get(bundle), job.rules, job.n, excluded, now)
        return Recommendation(answer.item_ids, answer.scores, source, bundle.model_version, reason)

    def _prepare(
        self,
        bundle: Bundle,
        jobs: list[RecommendJob],
        histories_read: list[History],
        now: float,
    ) -> _VariantPart:
        """One variant's jobs: the popularity answers of those the model cannot read, and the
        model input and ranking work of the others."""
        index = self._indexes.get(bundle)
        all_items, all_users = model_input(
            bundle, [h.recent_items for h in histories_read], [job.user_id for job in jobs]
        )
        part = _VariantPart(bundle, index, jobs, histories_read, [None] * len(jobs))
        for position, job in enumerate(jobs):
            if all_users[position] == GENERIC_USER_INDEX and not all_items[position].any():
                excluded = _excluded_set(job, histories_read[position])
                part.results[position] = self._popular(
                    bundle, job, SOURCE_POPULARITY, "no_history", excluded, now
                )
            else:
                part.rows.append(position)
        rows = part.rows
        if rows:
            excluded = exclusions(
                bundle.items.utf8_positions,
                [excluded_ids(jobs[p].exclude, histories_read[p]) for p in rows],
            )
            n = np.fromiter((jobs[p].n for p in rows), dtype=np.intp, count=len(rows))
            rules = [jobs[p].rules for p in rows]
            part.work = partial(
                model_answers,
                bundle,
                index,
                all_items[rows],
                all_users[rows],
                n,
                excluded,
                rules,
                now,
            )
        return part

    async def _rank(self, parts: list[_VariantPart]) -> None:
        """Every variant's model work of the batch, in one hand-off to the inference thread."""
        scored = [part for part in parts if part.work is not None]
        if not scored:
            return

        def run_all() -> list[tuple[list[Answer], float]]:
            return [part.work() for part in scored]  # type: ignore[misc]  # filtered above

        if sum(len(part.rows) for part in scored) >= OFFLOAD_MIN_ROWS:
            # onnxruntime and numpy release the GIL: HTTP keeps flowing on the event loop
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(self._inference_thread, run_all)
        else:
            outcomes = run_all()
        for part, (answers, inference_s) in zip(scored, outcomes, strict=True):
            part.answers = answers
            self._metrics.inference_seconds.observe(inference_s)
            self._metrics.batch_size.observe(len(part.rows))

    def _finish(self, part: _VariantPart, now: float) -> list[Recommendation]:
        """The variant's recommendations: the model's answers topped up where its eligible
        items ran out; a sample offered to the shadow bundle."""
        shadow = self._shadow
        index, jobs, histories_read = part.index, part.jobs, part.histories
        for position, answer in zip(part.rows, part.answers, strict=True):
            job = jobs[position]
            if len(answer.item_ids) < job.n:  # the model's eligible items ran out
                excluded_ids = _excluded_set(job, histories_read[position])
                top_up(answer, index, job.rules, job.n, excluded_ids, now, after_model=True)
            part.results[position] = Recommendation(
                answer.item_ids,
                answer.scores,
                SOURCE_MODEL,
                part.bundle.model_version,
                from_model=answer.from_model,
            )
            if shadow is not None and answer.from_model and shadow.wants():
                shadow.offer(
                    shadow_job(
                        job.user_id,
                        histories_read[position],
                        job.exclude,
                        job.rules,
                        answer.item_ids[: answer.from_model],
                        self._variant_names[job.variant],
                    )
                )
        return part.results  # type: ignore[return-value]  # every position is filled above


@dataclass
class _VariantPart:
    """One variant's share of a batch, from its model input to its recommendations."""

    bundle: Bundle
    index: CatalogueIndex
    jobs: list[RecommendJob]
    histories: list[History]
    results: list[Recommendation | None]  # popularity answers at first, then all
    rows: list[int] = field(default_factory=list)  # positions the model scores
    work: Callable[[], tuple[list[Answer], float]] | None = None  # ORT and ranking
    answers: list[Answer] = field(default_factory=list)  # the work's, one per row


def _excluded_set(job: RecommendJob, history: History) -> set[str]:
    """The ids a job's answer must leave out, as text (for the popularity walk)."""
    seen = history.seen_items or []
    return {*job.exclude, *(item.decode() for item in seen)}
