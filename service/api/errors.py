"""Error answers: 422 that never echoes the input, 503 when Redis is unreachable."""

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError

from service.recommender import RedisUnavailableError


def _json(content: object, status_code: int) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


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


async def invalid_request(_: Request, error: RequestValidationError) -> Response:
    return _json({"detail": [_client_error(e) for e in error.errors()]}, 422)


async def redis_unavailable(_: Request, error: RedisUnavailableError) -> Response:
    return _json({"detail": str(error)}, 503)


EXCEPTION_HANDLERS = {
    RequestValidationError: invalid_request,
    RedisUnavailableError: redis_unavailable,
}
