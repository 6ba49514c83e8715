"""uvicorn's HTTP/1.1 protocol (httptools) with a read deadline per request.

Left alone, uvicorn waits forever for a client that connects and sends nothing, or half a
request head, or half a body (measured: all three connections still open after 20 s, and a
half-sent body kept a SIGTERMed server alive). Here a client gets COSREC_REQUEST_READ_TIMEOUT_S
from connecting, or from the first byte of its next request on a kept-alive connection, to send
the whole request; then the connection is closed (a half-read body ends as a 499, counted).
Idle kept-alive connections close after uvicorn's own keep-alive timeout. Each request's scope
also gets the time its first byte was read (service.admission: deadlines start there).
"""

from __future__ import annotations

import asyncio
import logging
from functools import cache

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.admission import ARRIVED
from service.settings import Settings

log = logging.getLogger("cosrec.service")


@cache
def read_timeout_s() -> float:
    return Settings().request_read_timeout_s  # the worker's settings, from COSREC_*


class ReadDeadlineProtocol(HttpToolsProtocol):
    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[ARRIVED] = self.loop.time()  # type: ignore[literal-required]
        if self._read_deadline is None:  # a new request on a kept-alive connection
            self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(read_timeout_s(), self._too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            log.info("closed a connection that sent no whole request in %g s", read_timeout_s())
            self.transport.close()
