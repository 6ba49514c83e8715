"""Admission control: shed load before it costs anything, so what is admitted is answered in time.

Under CPU overload the queue that grows is not the batcher's but the event loop's: requests
wait, unparsed, before any handler runs (measured: at twice the capacity, no request reached
the batcher's bound, and clients gave up after 2 s). So the deadline of a request starts when
its first byte was read (`ARRIVED`, stamped by service.http_protocol), and this middleware, the
first thing a request meets, answers 503 with Retry-After at once (no body read, no
validation) to a request that is already past its deadline or that finds too many requests
inside the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from service.metrics import Metrics

ARRIVED = "cosrec.arrived"  # scope key: event-loop time when the request's first byte was read
RETRY_AFTER_S = b"1"
_BODY = orjson.dumps({"detail": "overloaded: retry later"})
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", b"%d" % len(_BODY)),
    (b"retry-after", RETRY_AFTER_S),
]


def client_gone(receive: Callable) -> bool:
    """Whether the request's client has closed its connection.

    uvicorn's receive() is a method of its request cycle, which sets `disconnected` when the
    connection is lost; under another server (or the test client) this says no.
    """
    return bool(getattr(getattr(receive, "__self__", None), "disconnected", False))


def arrival(scope: dict) -> float:
    """When the request arrived (loop time): its first byte, or now if nobody stamped it."""
    stamped = scope.get(ARRIVED)
    return stamped if stamped is not None else asyncio.get_running_loop().time()


class AdmissionMiddleware:
    """Sheds requests to the routes of `deadlines_s` (path -> seconds) that are already late,
    or that would make more than `max_in_flight` requests inside the app."""

    def __init__(
        self, app, metrics: Metrics, deadlines_s: dict[str, float], max_in_flight: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.deadlines_s = deadlines_s
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        deadline_s = self.deadlines_s.get(scope["path"]) if scope["type"] == "http" else None
        if deadline_s is None:
            await self.app(scope, receive, send)
            return
        if client_gone(receive):  # its bytes waited in a buffer while the client gave up
            self.metrics.shed.labels(scope["path"], "client_gone").inc()
            return
        if asyncio.get_running_loop().time() - arrival(scope) > deadline_s:
            await self._shed(scope, send, "late")
            return
        if self.in_flight >= self.max_in_flight:
            await self._shed(scope, send, "overloaded")
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _shed(self, scope, send, reason: str) -> None:
        self.metrics.shed.labels(scope["path"], reason).inc()
        await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _BODY})
