"""POST /events behind the route: group by user, write through the batcher, count."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from contract.bundle import Bundle
from service.batching import GreedyBatcher
from service.metrics import Metrics
from service.store import Event, RedisStore, UserEvents


class IncomingEvent(Protocol):
    user_id: str
    item_id: str
    timestamp: float | None
    event_id: str | None


@dataclass(frozen=True)
class WriteCounts:
    accepted: int  # stored now
    duplicates: int  # event_id stored before: not stored again
    unknown_items: int  # stored, but the serving model does not know the item


class EventWriter:
    """Writes one request's events; the writes of concurrent requests share one pipeline."""

    def __init__(
        self,
        store: RedisStore,
        current_bundle: Callable[[], Bundle],
        metrics: Metrics,
        max_batch: int,
        max_wait_s: float,
    ) -> None:
        self._store = store
        self._current_bundle = current_bundle
        self._metrics = metrics
        self._batcher = GreedyBatcher(self._write_batch, max_batch, max_wait_s)

    def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()

    async def write(self, events: Sequence[IncomingEvent]) -> WriteCounts:
        """Store the events; raises RedisError or OSError when Redis did not confirm them all
        (then some may be stored: a retry with the same event ids completes the request)."""
        known_items = self._current_bundle().items.utf8_positions
        now = time.time()
        by_user: dict[str, list[Event]] = {}
        for event in events:
            timestamp = now if event.timestamp is None else event.timestamp
            item = event.item_id.encode()
            by_user.setdefault(event.user_id, []).append(
                Event(item, timestamp, event.event_id, item in known_items)
            )
        groups = [UserEvents(user, tuple(user_events)) for user, user_events in by_user.items()]
        try:
            flags = await self._batcher.submit(groups)
        except (RedisError, OSError):
            self._metrics.events_rejected.labels("redis_unavailable").inc(len(events))
            raise
        accepted = unknown = 0
        for group, group_flags in zip(groups, flags, strict=True):
            for event, stored in zip(group.events, group_flags, strict=True):
                accepted += stored
                unknown += stored and not event.known
        counts = WriteCounts(accepted, len(events) - accepted, unknown)
        self._metrics.events_accepted.inc(counts.accepted)
        self._metrics.unknown_items.inc(counts.unknown_items)
        if counts.duplicates:
            self._metrics.events_rejected.labels("duplicate").inc(counts.duplicates)
        return counts

    async def _write_batch(self, requests: list[list[UserEvents]]) -> list[list[list[int]]]:
        """All requests' groups in one round trip; each request gets its own flags back."""
        flags = await self._store.append([group for groups in requests for group in groups])
        out, start = [], 0
        for groups in requests:
            out.append(flags[start : start + len(groups)])
            start += len(groups)
        return out
