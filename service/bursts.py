"""A bounded queue that a background task empties in bursts (the answers' record, the shadow).

After the first item arrives the task gathers for `gather_s` more, so one burst carries that
much traffic: one round trip, script call or onnxruntime call serves many items instead of
one. A full burst, or `flush()`, ends the gathering at once. Unlike `service.batching`'s
GreedyBatcher, no caller waits for an answer: no futures, and nothing in flight to bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Bursts(Generic[T]):
    def __init__(self, max_pending: int, max_burst: int, gather_s: float) -> None:
        self._items: deque[T] = deque()
        self._max_pending = max_pending
        self._max_burst = max_burst
        self._gather_s = gather_s
        self._arrived = asyncio.Event()  # items wait (set by put, cleared when take empties)
        self._now = asyncio.Event()  # a full burst waits, or flush(): stop gathering

    def put(self, item: T) -> bool:
        """Queue `item`; False (not queued) when `max_pending` items already wait."""
        if len(self._items) >= self._max_pending:
            return False
        self._items.append(item)
        self._arrived.set()
        if len(self._items) >= self._max_burst:
            self._now.set()
        return True

    def flush(self) -> None:
        """End the gathering now: what waits goes out in the next bursts."""
        self._now.set()

    async def gathered(self) -> None:
        """Return when items have arrived and the gathering after the first is over."""
        await self._arrived.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._gather_s):
                await self._now.wait()

    def take(self) -> list[T]:
        """The oldest waiting items, at most `max_burst` of them ([] when none wait)."""
        burst = [self._items.popleft() for _ in range(min(len(self._items), self._max_burst))]
        if not self._items:
            # Nothing is left to gather or hurry. Items that arrived while the last burst was
            # written went out in this loop, so no stale wake starts an empty gathering.
            self._arrived.clear()
            self._now.clear()
        return burst
