"""Online experiments: variants with sticky user assignment, the record of what was shown,
and a shadow bundle that scores a sample of traffic off the request path.

- Assignment: a user's variant is a keyed BLAKE2b hash of the user id (key: the salt), read as
  a number in [0, 1) and placed on the cumulative weights. Same user, same variant, on every
  worker and replica, with no state; another salt reshuffles everyone.
- The record: every answer, with its recommendation_id, goes onto the user's recommendations
  stream (`contract.redis_layout`), written after the answer in one script call per burst of
  GATHER_S (one pipeline on a Redis Cluster, whose keys of a burst lie on many nodes), never on
  the request's path; when Redis is slow the queue is bounded and what overflows is counted.
- The shadow: a sampled request's inputs (history, user, exclusions, rules) and its served top
  10 are queued (bounded, dropped when full); a background task scores each GATHER_S of them
  with the shadow bundle on its own low-priority thread and records the overlap of the two
  top 10s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import threading
import time
from bisect import bisect_right
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from contract.bundle import Bundle
from contract.redis_layout import (
    REC_ID,
    REC_ITEM_SEPARATOR,
    REC_ITEMS,
    REC_TIMESTAMP,
    REC_VARIANT,
    recommendations_key,
)
from service import pipelining
from service.bursts import Bursts
from service.metrics import Metrics
from service.model_answers import excluded_ids, model_answers, model_input
from service.ranking import exclusions
from service.rules import Indexes, Rules

if TYPE_CHECKING:
    from service.reloading import BundleHolder
    from service.store import History

log = logging.getLogger("cosrec.service")

SHADOW_TOP = 10

# A burst of recommendations in one call: per record (KEYS[i]; ARGV from 7, 4 a record) one
# XADD capped at ARGV[1] entries and, unless ARGV[2] is "0", a PEXPIRE of ARGV[2] ms; ARGV[3..6]
# name the fields. Returns how many records Redis refused. One command and one reply per burst
# instead of two per record: ~30 us of the service's CPU a recommendation, measured.
RECORD_SCRIPT = """
local failed = 0
for i, key in ipairs(KEYS) do
  local at = 6 + (i - 1) * 4
  local added = redis.pcall('XADD', key, 'MAXLEN', ARGV[1], '*', ARGV[3], ARGV[at + 1],
    ARGV[4], ARGV[at + 2], ARGV[5], ARGV[at + 3], ARGV[6], ARGV[at + 4])
  if type(added) == 'table' and added.err then
    failed = failed + 1
  elseif ARGV[2] ~= '0' then
    redis.call('PEXPIRE', key, ARGV[2])
  end
end
return failed
"""

RECORD_FIELDS = tuple(name.encode() for name in (REC_ID, REC_VARIANT, REC_ITEMS, REC_TIMESTAMP))

# How long the background writers (the record, the shadow) gather work after the first item:
# one burst then carries ~GATHER_S of traffic. A record write costs a round trip and a script
# call, a shadow batch one onnxruntime call; onnxruntime costs 0.7-1 ms for 1 row against ~0.2
# ms a row for 10 (bench/variant_cost.py), and none of it is on a request's path.
GATHER_S = 0.1


class Experiment:
    """Sticky assignment of users to variants by a salted hash, with the settings' weights."""

    def __init__(self, names: Sequence[str], weights: Sequence[float], salt: str) -> None:
        self.names = list(names)
        total = sum(weights)
        self._cumulative = [w / total for w in accumulate(weights)] if total > 0 else [1.0]
        # keyed once: copying the keyed state costs less than keying a new hash per request
        self._keyed = hashlib.blake2b(digest_size=8, key=salt.encode()[:64])
        self._single = sum(1 for w in weights if w > 0) <= 1
        self._only = next((k for k, w in enumerate(weights) if w > 0), 0)

    def assign(self, user_id: str) -> int:
        """The index of the user's variant."""
        if self._single:
            return self._only
        hasher = self._keyed.copy()
        hasher.update(user_id.encode())
        point = int.from_bytes(hasher.digest(), "big") / 2**64
        return min(bisect_right(self._cumulative, point), len(self.names) - 1)


class RecommendationLog:
    """Writes served recommendations to the users' recommendations streams, in the background."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        max_per_user: int,
        ttl_s: float,
        timeout_s: float,
        metrics: Metrics,
        max_pending: int = 8192,
        max_batch: int = 512,
        gather_s: float = GATHER_S,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._max_len = b"%d" % max_per_user
        self._ttl = b"%d" % int(ttl_s * 1000) if ttl_s > 0 else None
        self._timeout_s = timeout_s
        self._metrics = metrics
        self._pending: Bursts[tuple[str, str, str, list[str], float]] = Bursts(
            max_pending, max_batch, gather_s
        )
        self._script = (
            None if isinstance(client, aioredis.RedisCluster) else pipelining.Script(RECORD_SCRIPT)
        )
        self._idle = asyncio.Event()  # nothing waits or is being written
        self._idle.set()

    def record(self, user_id: str, rid: str, variant: str, item_ids: list[str]) -> None:
        if not self._pending.put((user_id, rid, variant, item_ids, time.time())):
            self._metrics.unrecorded.labels("overloaded").inc()
            return
        self._idle.clear()

    async def run(self) -> None:
        while True:
            await self._pending.gathered()
            while batch := self._pending.take():
                await self._write(batch)
            self._idle.set()

    async def drain(self, timeout_s: float) -> None:
        """Write every recommendation recorded so far now (no gathering), and wait until it
        was written (or failed)."""
        if self._idle.is_set():  # nothing pending (record() clears it with its put)
            return
        self._pending.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()

    async def _write(self, batch: list[tuple[str, str, str, list[str], float]]) -> None:
        separator = REC_ITEM_SEPARATOR
        records = [
            (
                recommendations_key(self._prefix, user_id),
                (rid, variant, separator.join(item_ids), repr(at)),
            )
            for user_id, rid, variant, item_ids, at in batch
        ]
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._script is not None:
                    failed = await self._scripted(self._script, records)
                else:
                    failed = await self._pipelined(records)
        except (RedisError, OSError) as error:
            self._metrics.unrecorded.labels("redis_unavailable").inc(len(batch))
            log.debug("recommendations not recorded: %s", error)
            return
        if failed:
            self._metrics.unrecorded.labels("redis_error").inc(failed)

    async def _scripted(
        self, script: pipelining.Script, records: list[tuple[str, tuple[str, str, str, str]]]
    ) -> int:
        """The records in one call of RECORD_SCRIPT (`script`: self._script, known not None),
        packed by hand (redis-py's Script packs each of its 4 + 1 arguments a record in
        Python: ~15 us of CPU a recommendation); returns how many Redis refused."""
        args = [b"%d" % len(records), *(key.encode() for key, _ in records)]
        args += [self._max_len, self._ttl or b"0", *RECORD_FIELDS]
        for _, values in records:
            args.extend(value.encode() for value in values)
        (reply,) = await pipelining.run_script(self._client, script, [args])
        if isinstance(reply, Exception):  # the script failed (e.g. OOM): none counts as written
            log.debug("recommendations not recorded: %s", reply)
            return len(records)
        return int(reply)

    async def _pipelined(self, records: list[tuple[str, tuple[str, str, str, str]]]) -> int:
        """The records as plain commands in one pipeline (a Redis Cluster routes each key to
        its node); returns how many Redis refused."""
        commands: list[list[bytes]] = []
        for key, values in records:
            add = [b"XADD", key.encode(), b"MAXLEN", self._max_len, b"*"]
            for name, value in zip(RECORD_FIELDS, values, strict=True):
                add += [name, value.encode()]
            commands.append(add)
            if self._ttl is not None:
                commands.append([b"PEXPIRE", key.encode(), self._ttl])
        replies = await pipelining.execute(self._client, commands)
        return sum(isinstance(reply, Exception) for reply in replies)


@dataclass(frozen=True)
class ShadowJob:
    user_id: str
    recent_items: list[bytes]
    excluded_ids: list[bytes]
    rules: Rules
    served: list[str]  # the served answer's model items, best first (at most SHADOW_TOP)
    variant: str


def _lower_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: nice applies per thread)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class ShadowScorer:
    """Scores a sample of requests with the shadow bundle, off the request path."""

    def __init__(
        self,
        holder: BundleHolder,
        indexes: Indexes,
        metrics: Metrics,
        sample: float,
        max_pending: int = 256,
        max_batch: int = 64,
        gather_s: float = GATHER_S,
    ) -> None:
        self.holder = holder
        self._indexes = indexes
        self._metrics = metrics
        self._sample = sample
        self._pending: Bursts[ShadowJob] = Bursts(max_pending, max_batch, gather_s)
        self._thread = ThreadPoolExecutor(
            1, thread_name_prefix="shadow", initializer=_lower_priority
        )
        self._random = random.Random()

    def wants(self) -> bool:
        """Whether to sample this request (draw once per answered request)."""
        return self._sample > 0 and self._random.random() < self._sample

    def offer(self, job: ShadowJob) -> None:
        if not self._pending.put(job):
            self._metrics.shadow.labels("dropped").inc()

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._pending.gathered()
            while jobs := self._pending.take():
                bundle = self.holder.current
                try:
                    index = self._indexes.get(bundle)
                    overlaps = await loop.run_in_executor(
                        self._thread, _shadow_overlaps, bundle, index, jobs, time.time()
                    )
                except Exception:  # the shadow must never cost the service
                    self._metrics.shadow.labels("failed").inc(len(jobs))
                    log.exception("shadow scoring failed")
                    continue
                self._metrics.shadow.labels("scored").inc(len(jobs))
                for job, overlap in zip(jobs, overlaps, strict=True):
                    self._metrics.shadow_overlap.labels(job.variant).observe(overlap)


def _shadow_overlaps(bundle: Bundle, index, jobs: list[ShadowJob], now: float) -> list[float]:
    """Per job: the share of its served top items that the shadow ranks in as many places."""
    items, users = model_input(
        bundle, [job.recent_items for job in jobs], [job.user_id for job in jobs]
    )
    excluded = exclusions(bundle.items.utf8_positions, [job.excluded_ids for job in jobs])
    n = np.fromiter((len(job.served) for job in jobs), dtype=np.intp, count=len(jobs))
    rules = [job.rules for job in jobs]
    answers, _ = model_answers(bundle, index, items, users, n, excluded, rules, now)
    return [
        len(set(answer.item_ids) & set(job.served)) / len(job.served)
        for answer, job in zip(answers, jobs, strict=True)
    ]


def shadow_job(
    user_id: str,
    history: History,
    exclude: Sequence[str],
    rules: Rules,
    served: list[str],
    variant: str,
) -> ShadowJob:
    return ShadowJob(
        user_id,
        history.recent_items,
        excluded_ids(exclude, history),
        rules,
        served[:SHADOW_TOP],
        variant,
    )
