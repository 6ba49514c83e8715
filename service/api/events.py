"""POST /events: store users' events in Redis, confirmed by the deadline or not at all."""

from fastapi import APIRouter, Depends, Request, Response
from redis.exceptions import RedisError

from service.admission import arrival
from service.api.deps import disconnect_probe, require_key, services_of
from service.api.errors import REDIS_UNAVAILABLE, redis_errors, retry_later
from service.api.responses import model_response
from service.bodies import JsonBody
from service.schemas import EventsInput, EventsResponse

NOT_CONFIRMED = "; the events are not confirmed: retry with the same event_ids"


def events_router(body: JsonBody, write_key: bool) -> APIRouter:
    """The route, reading `body` (its class is built from the settings); with `write_key`, the
    bearer key COSREC_API_KEY is required (without one anyone may write: the check is not
    mounted, as on /recommend: FastAPI's dependency solving cost ~90 us a request here)."""
    router = APIRouter(tags=["events"], dependencies=[Depends(require_key)] if write_key else [])

    @router.post(
        "/events",
        response_model=EventsResponse,
        openapi_extra=body.openapi(),
        responses={503: {"description": "not confirmed (retry with the same event_ids)"}},
    )
    async def events(request: Request) -> Response:
        """Store events; a 200 means Redis has every accepted one (retries: same event_id).
        Answered by the deadline (COSREC_EVENTS_DEADLINE_MS)."""
        batch: EventsInput = await body.parse(request)
        services = services_of(request)
        deadline = arrival(request.scope) + services.events_deadline_s
        try:
            counts = await services.writer.write(batch.events, deadline, disconnect_probe(request))
        except TimeoutError:
            services.metrics.events_rejected.labels("deadline").inc(len(batch.events))
            return _not_confirmed("Redis did not confirm in time")
        except (RedisError, OSError) as error:
            services.metrics.events_rejected.labels("redis_unavailable").inc(len(batch.events))
            redis_errors.warning("/events: Redis unavailable: %s", error)
            return _not_confirmed(REDIS_UNAVAILABLE)
        return model_response(EventsResponse.model_validate(counts, from_attributes=True))

    return router


def _not_confirmed(reason: str) -> Response:
    return retry_later(reason + NOT_CONFIRMED)
