"""Greedy micro-batching: whatever queued while a batch was being formed or run goes out together.

No fixed window by default (a window only adds latency at low load); `max_wait_s` lets a batch
fill a little longer when asked for. With `max_in_flight` 1, batches run strictly one after
the other; with 2, the next batch starts as soon as requests wait (it reads Redis, builds its
inputs) while the previous one is in onnxruntime, so the event loop is not idle through the
model call.

With `group`, a batch holds only requests of the oldest waiting request's group (the others
keep their place for a later batch): a recommendation batch is then one model's, one
onnxruntime call, instead of one call per model over a share of the rows.

Bounded: at most `max_queue` requests wait (`submit` raises QueueFullError beyond: shed the load at
once), and a batch holds at most `max_batch` requests and `max_weight` units of work (e.g.
events). A request whose caller stopped waiting (its deadline passed: the future is cancelled)
or whose client disconnected is dropped before its batch starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(Exception):
    """The batcher's queue is at its bound: the request is refused, not queued."""


class ClientGoneError(Exception):
    """The request's client disconnected: nothing more is done for it."""


def _never() -> bool:
    return False


@dataclass(slots=True)
class _Waiter(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    gone: Callable[[], bool]


class GreedyBatcher(Generic[T, R]):
    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int,
        max_wait_s: float = 0.0,
        max_in_flight: int = 1,
        max_queue: int = 1024,
        weight: Callable[[T], int] | None = None,
        max_weight: int | None = None,
        group: Callable[[T], Hashable] | None = None,
    ) -> None:
        self._process = process
        self._group = group
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._max_in_flight = max_in_flight
        self._max_queue = max_queue
        self._weight = weight
        self._max_weight = max_weight
        self._pending: deque[_Waiter[T, R]] = deque()
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
            future = self._pending.popleft().future
            if not future.done():
                future.set_exception(RuntimeError("the service is shutting down"))

    def submit(self, item: T, gone: Callable[[], bool] = _never) -> asyncio.Future[R]:
        """Queue `item`; its result (or failure) arrives through the future. Cancel the future
        (e.g. a timeout around `await`) and the item is dropped if it has not started.
        `gone()` true means its client left: dropped too, with ClientGoneError."""
        if len(self._pending) >= self._max_queue:
            self._drop_abandoned()  # they must not hold the bound
            if len(self._pending) >= self._max_queue:
                raise QueueFullError(f"{self._max_queue} requests are already waiting")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append(_Waiter(item, future, gone))
        self._wake.set()
        return future

    def _drop_abandoned(self) -> None:
        """Forget the waiters whose caller stopped waiting or whose client left."""
        kept: deque[_Waiter[T, R]] = deque()
        for waiter in self._pending:
            if waiter.future.done():
                continue
            if waiter.gone():
                waiter.future.set_exception(ClientGoneError())
                continue
            kept.append(waiter)
        self._pending = kept

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
            batch = self._next_batch()
            if not batch:
                slots.release()
                continue
            task = loop.create_task(self._run_batch(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            task.add_done_callback(lambda _: slots.release())
            # on the task, not in the coroutine: a task cancelled before its first step never
            # runs the coroutine's own handlers
            task.add_done_callback(partial(_fail_unanswered, batch))

    def _next_batch(self) -> list[_Waiter[T, R]]:
        """The oldest waiting requests (of the oldest one's group), within the bounds;
        abandoned ones are dropped."""
        batch: list[_Waiter[T, R]] = []
        passed: list[_Waiter[T, R]] = []  # live waiters left for a later batch, in order
        weight = 0
        group: Hashable = None
        while self._pending and len(batch) < self._max_batch:
            waiter = self._pending[0]
            if waiter.future.done():  # its caller stopped waiting (deadline): drop it
                self._pending.popleft()
                continue
            if waiter.gone():
                self._pending.popleft()
                waiter.future.set_exception(ClientGoneError())
                continue
            if self._group is not None:
                key = self._group(waiter.item)
                if batch and key != group:
                    passed.append(self._pending.popleft())
                    continue
                group = key
            if self._weight is not None and self._max_weight is not None:
                size = self._weight(waiter.item)
                if batch and weight + size > self._max_weight:
                    break
                weight += size
            batch.append(self._pending.popleft())
        self._pending.extendleft(reversed(passed))
        return batch

    async def _run_batch(self, batch: list[_Waiter[T, R]]) -> None:
        try:
            results = await self._process([waiter.item for waiter in batch])
        except Exception as error:  # every waiter of the batch gets the failure
            for waiter in batch:
                if not waiter.future.done():
                    waiter.future.set_exception(error)
            return
        for waiter, result in zip(batch, results, strict=True):
            if not waiter.future.done():  # its client may have gone away
                waiter.future.set_result(result)


def _fail_unanswered(batch: list[_Waiter], task: asyncio.Task) -> None:
    """Whatever way the batch's task ended (cancelled at shutdown, or failed outside `process`),
    no waiter of it is left waiting."""
    failure = (
        RuntimeError("the service is shutting down")
        if task.cancelled()
        else task.exception() or RuntimeError("the batch ended without an answer")
    )
    for waiter in batch:
        if not waiter.future.done():
            waiter.future.set_exception(failure)
