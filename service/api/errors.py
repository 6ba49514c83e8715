"""Error answers: 422 that never echoes the input, 503 that reveals nothing of Redis, 503 with
Retry-After when load is shed, and 499 (counted, one log line) when the client left first."""

import logging
import time

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError

from service.batching import ClientGoneError, QueueFullError
from service.recommender import RedisUnavailableError

log = logging.getLogger("cosrec.service")

REDIS_UNAVAILABLE = "Redis unavailable"
RETRY_AFTER_S = "1"
CLIENT_CLOSED = 499  # nginx's "client closed request": counted apart from errors


class ThrottledLog:
    """Logs a warning at most once per `interval_s` (an outage must not flood the log)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._last = 0.0
        self._skipped = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._skipped += 1
            return
        suffix = f" ({self._skipped} more like it since the last)" if self._skipped else ""
        log.warning(message + suffix, *args)
        self._last, self._skipped = now, 0


redis_errors = ThrottledLog()


def json_response(content: object, status_code: int, **headers: str) -> Response:
    return Response(
        orjson.dumps(content), status_code, headers=headers or None, media_type="application/json"
    )


def _client_error(error: dict) -> dict:
    """A validation error as JSON-safe data, without echoing the input back.

    The input may be bytes that are not UTF-8, NaN, or megabytes: FastAPI's own handler
    fails or bloats on those.
    """
    safe = {key: error[key] for key in ("type", "loc", "msg") if key in error}
    context = error.get("ctx")
    if context:
        safe["ctx"] = {
            key: value if isinstance(value, int | str | bool) else str(value)
            for key, value in context.items()
        }
    return safe


def retry_later(detail: str) -> Response:
    """503 with Retry-After: nothing was done, the client may send the same request again."""
    return json_response({"detail": detail}, 503, **{"Retry-After": RETRY_AFTER_S})


async def invalid_request(_: Request, error: RequestValidationError) -> Response:
    return json_response({"detail": [_client_error(e) for e in error.errors()]}, 422)


async def redis_unavailable(request: Request, error: RedisUnavailableError) -> Response:
    redis_errors.warning("%s: Redis unavailable: %s", request.url.path, error)
    return retry_later(REDIS_UNAVAILABLE)


async def overloaded(request: Request, error: QueueFullError) -> Response:
    request.app.state.metrics.shed.labels(request.url.path, "overloaded").inc()
    return retry_later(f"overloaded ({error}): retry later")


async def client_left(request: Request, _: Exception) -> Response:
    request.app.state.metrics.shed.labels(request.url.path, "client_gone").inc()
    log.info("%s: the client closed the connection before the answer", request.url.path)
    return Response(status_code=CLIENT_CLOSED)  # nobody reads it: this is what gets counted


EXCEPTION_HANDLERS = {
    RequestValidationError: invalid_request,
    RedisUnavailableError: redis_unavailable,
    QueueFullError: overloaded,
    ClientGoneError: client_left,
}
