"""POST /events behind the route: group by user, write through the batcher, count.

Every event gets an event_id before any Redis call: the client's, or a random one the service
assigns, so that no retry (a client's with the same ids, or one inside the Redis client)
applies an event twice. Writes are batched by events, not requests, so one slow round trip
covers a bounded amount of work.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from contract.attribution import UNTYPED, variant_of
from contract.bundle import Bundle
from service.batching import GreedyBatcher
from service.metrics import Metrics
from service.store import CONFLICT, DUPLICATE, STORED, Event, RedisStore, UserEvents


class IncomingEvent(Protocol):
    user_id: str
    item_id: str
    timestamp: float | None
    event_id: str | None
    type: str | None
    recommendation_id: str | None


@dataclass(frozen=True)
class WriteCounts:
    accepted: int  # stored now
    duplicates: int  # event_id stored before with the same content: not stored again
    conflicts: int  # event_id stored before with other content: not stored, reported
    unknown_items: int  # stored, but the serving model does not know the item


class _Write(NamedTuple):
    groups: list[UserEvents]
    deadline: float  # loop time by which the request must be answered
    events: int


def fingerprint(
    item_id: bytes, timestamp: float | None, kind: bytes = b"", rid: bytes = b""
) -> bytes:
    """What a client sent for one event: a reused event_id with another one is a conflict."""
    sent = item_id + b"\x1f" + (repr(timestamp).encode() if timestamp is not None else b"")
    if kind or rid:  # (events without them keep the fingerprint they always had)
        sent += b"\x1f" + kind + b"\x1f" + rid
    return hashlib.blake2b(sent, digest_size=8).digest()


class EventWriter:
    """Writes one request's events; the writes of concurrent requests share one pipeline."""

    def __init__(
        self,
        store: RedisStore,
        current_bundle: Callable[[], Bundle],
        metrics: Metrics,
        max_wait_s: float,
        max_queue: int,
        max_batch_events: int,
        variant_names: Sequence[str] = (),
    ) -> None:
        self._store = store
        self._current_bundle = current_bundle
        self._metrics = metrics
        self._variants = frozenset(variant_names)
        # Writes keep their arrival order: one batch at a time.
        self._batcher = GreedyBatcher(
            self._write_batch,
            max_batch=max_batch_events,
            max_wait_s=max_wait_s,
            max_queue=max_queue,
            weight=lambda write: write.events,
            max_weight=max_batch_events,
        )

    def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()

    async def write(
        self, events: Sequence[IncomingEvent], deadline: float, gone: Callable[[], bool]
    ) -> WriteCounts:
        """Store the events by `deadline` (loop time).

        Raises QueueFullError (not queued: the queue is at its bound), ClientGoneError
        (dropped before it started), TimeoutError (not confirmed by the deadline) or
        RedisError / OSError (Redis did not confirm them all). After the last two, some may
        be stored: a retry with the same event ids completes the request.
        """
        groups = self._groups(events)
        future = self._batcher.submit(_Write(groups, deadline, len(events)), gone)
        async with asyncio.timeout_at(deadline):  # cancels the write if it has not started
            statuses = await future
        return self._count(groups, statuses)

    def _groups(self, events: Sequence[IncomingEvent]) -> list[UserEvents]:
        """The events by user, in request order, each with its event id and fingerprint."""
        known_items = self._current_bundle().items.utf8_positions
        now = time.time()
        by_user: dict[str, list[Event]] = {}
        for event in events:
            item = event.item_id.encode()
            event_id = (event.event_id or uuid.uuid4().hex).encode()
            timestamp = now if event.timestamp is None else event.timestamp
            kind = event.type.encode() if event.type else b""
            rid = event.recommendation_id.encode() if event.recommendation_id else b""
            by_user.setdefault(event.user_id, []).append(
                Event(
                    item,
                    timestamp,
                    event_id,
                    fingerprint(item, event.timestamp, kind, rid),
                    item in known_items,
                    kind,
                    rid,
                )
            )
        return [UserEvents(user, tuple(user_events)) for user, user_events in by_user.items()]

    def _count(self, groups: list[UserEvents], statuses: list[list[int]]) -> WriteCounts:
        accepted = duplicates = conflicts = unknown = 0
        for group, group_statuses in zip(groups, statuses, strict=True):
            for event, status in zip(group.events, group_statuses, strict=True):
                accepted += status == STORED
                duplicates += status == DUPLICATE
                conflicts += status == CONFLICT
                unknown += status == STORED and not event.known
                if event.rid and status == STORED:
                    self._count_attributed(event)
        self._metrics.events_accepted.inc(accepted)
        self._metrics.unknown_items.inc(unknown)
        if duplicates:
            self._metrics.events_rejected.labels("duplicate").inc(duplicates)
        if conflicts:
            self._metrics.events_rejected.labels("conflict").inc(conflicts)
        return WriteCounts(accepted, duplicates, conflicts, unknown)

    def _count_attributed(self, event: Event) -> None:
        """Per the variant its recommendation_id names (unknown: not one of the settings'),
        by type; the report (`cosrec experiment report`) checks each against the record."""
        variant = variant_of(event.rid.decode())
        label = variant if variant in self._variants else "unknown"
        kind = event.type.decode() if event.type else UNTYPED
        self._metrics.attributed.labels(label, kind).inc()

    async def _write_batch(self, writes: list[_Write]) -> list[list[list[int]]]:
        """All requests' groups in one round trip, bounded by the earliest deadline; each
        request gets its own statuses back."""
        remaining = min(write.deadline for write in writes) - asyncio.get_running_loop().time()
        statuses = await self._store.append(
            [group for write in writes for group in write.groups], remaining
        )
        out, start = [], 0
        for write in writes:
            out.append(statuses[start : start + len(write.groups)])
            start += len(write.groups)
        return out
