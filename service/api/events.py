"""POST /events: store users' events in Redis."""

from fastapi import APIRouter, Depends, HTTPException, Request
from redis.exceptions import RedisError

from service.api.deps import require_key, services_of
from service.bodies import JsonBody
from service.schemas import EventsInput, EventsResponse


def events_router(body: JsonBody) -> APIRouter:
    """The route, reading `body` (its class is built from the settings)."""
    router = APIRouter(tags=["events"], dependencies=[Depends(require_key)])

    @router.post("/events", openapi_extra=body.openapi())
    async def events(request: Request) -> EventsResponse:
        """Store events; a 200 means Redis has every accepted one (retries: same event_id)."""
        batch: EventsInput = await body.parse(request)
        try:
            counts = await services_of(request).writer.write(batch.events)
        except (RedisError, OSError) as error:
            detail = f"redis unavailable: {error}; retry with the same event_ids"
            raise HTTPException(503, detail) from error
        return EventsResponse.model_validate(counts, from_attributes=True)

    return router
