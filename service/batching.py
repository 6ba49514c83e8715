"""Greedy micro-batching: whatever queued while a batch was being formed or run goes out together.

No fixed window by default (a window only adds latency at low load); `max_wait_s` lets a batch
fill a little longer when asked for. With `max_in_flight` 1, batches run strictly one after
the other; with 2, the next batch starts as soon as requests wait (it reads Redis, builds its
inputs) while the previous one is in onnxruntime, so the event loop is not idle through the
model call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GreedyBatcher(Generic[T, R]):
    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int,
        max_wait_s: float = 0.0,
        max_in_flight: int = 1,
    ) -> None:
        self._process = process
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._max_in_flight = max_in_flight
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [*self._in_flight, *([self._runner] if self._runner else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
        slots = asyncio.Semaphore(self._max_in_flight)
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await slots.acquire()
            if self._max_wait_s > 0 and len(self._pending) < self._max_batch:
                await asyncio.sleep(self._max_wait_s)
            size = min(len(self._pending), self._max_batch)
            batch = [self._pending.popleft() for _ in range(size)]
            task = loop.create_task(self._run_batch(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            task.add_done_callback(lambda _: slots.release())
            # on the task, not in the coroutine: a task cancelled before its first step never
            # runs the coroutine's own handlers
            task.add_done_callback(partial(_fail_unanswered, batch))

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._process([item for item, _ in batch])
        except Exception as error:  # every waiter of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its client may have gone away
                future.set_result(result)


def _fail_unanswered(batch: list[tuple[object, asyncio.Future]], task: asyncio.Task) -> None:
    """Whatever way the batch's task ended (cancelled at shutdown, or failed outside `process`),
    no waiter of it is left waiting."""
    failure = (
        RuntimeError("the service is shutting down")
        if task.cancelled()
        else task.exception() or RuntimeError("the batch ended without an answer")
    )
    for _, future in batch:
        if not future.done():
            future.set_exception(failure)
