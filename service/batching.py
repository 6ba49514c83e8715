"""Greedy micro-batching: whatever queued while the previous batch ran becomes the next batch.

No fixed window by default (a window only adds latency at low load); `max_wait_s` lets a batch
fill a little longer when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GreedyBatcher(Generic[T, R]):
    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int,
        max_wait_s: float = 0.0,
    ) -> None:
        self._process = process
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(RuntimeError("the service is shutting down"))

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if self._max_wait_s > 0 and len(self._pending) < self._max_batch:
                await asyncio.sleep(self._max_wait_s)
            size = min(len(self._pending), self._max_batch)
            batch = [self._pending.popleft() for _ in range(size)]
            try:
                results = await self._process([item for item, _ in batch])
            except Exception as error:  # every waiter of the batch gets the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its client may have gone away
                    future.set_result(result)
