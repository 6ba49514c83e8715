"""The item catalogue: PUT /items/{id}, PUT /items (bulk), DELETE /items/{id}, GET /items/{id}.

Behind the API key, like /events. A 200 means Redis has the change; this worker's copy is
refreshed before the answer, every other worker's and replica's within
COSREC_CATALOGUE_POLL_S (service.catalogue).
"""

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Request, Response
from redis.exceptions import RedisError

from service.api.deps import require_key, services_of
from service.api.errors import REDIS_UNAVAILABLE, json_response, redis_errors, retry_later
from service.bodies import JsonBody
from service.catalogue import REFUSED, WRITTEN, ItemAttributes
from service.lifespan import Services
from service.schemas import ID_PATTERN, ItemDeleted, ItemsInput, ItemsWritten, ItemView, ItemWritten

FULL = "the catalogue holds COSREC_MAX_CATALOGUE_ITEMS items already"


def items_router(one: JsonBody, many: JsonBody, max_id_length: int) -> APIRouter:
    """The routes; `one` reads an item's attributes, `many` a bulk body."""
    router = APIRouter(tags=["catalogue"], dependencies=[Depends(require_key)])
    ItemId = Annotated[
        str,
        Path(
            min_length=1,
            max_length=max_id_length,
            pattern=ID_PATTERN,
            description="the item id (percent-encoded)",
        ),
    ]
    unavailable = {503: {"description": "Redis unavailable: not stored, retry"}}

    @router.put(
        "/items/{item_id:path}",
        openapi_extra=one.openapi(),
        responses={409: {"description": FULL}, **unavailable},
    )
    async def put_item(item_id: ItemId, request: Request) -> ItemWritten:
        """Create or replace one item's attributes."""
        attributes: ItemAttributes = await one.parse(request)
        services = services_of(request)
        try:
            version, statuses = await services.catalogue_store.write(
                [(item_id, attributes.to_json())]
            )
        except (RedisError, OSError) as error:
            return _unavailable(error)
        if statuses[0] == REFUSED:
            return json_response({"detail": FULL}, 409)
        await _refresh(services)
        return ItemWritten(item_id=item_id, version=version)

    @router.put("/items", openapi_extra=many.openapi(), responses=unavailable)
    async def put_items(request: Request) -> ItemsWritten:
        """Create or replace many items (in order; a later entry for the same id wins)."""
        batch: ItemsInput = await many.parse(request)
        services = services_of(request)
        changes = [
            (record.item_id, ItemAttributes.model_validate(record.model_dump(exclude={"item_id"})))
            for record in batch.items
        ]
        try:
            version, statuses = await services.catalogue_store.write(
                [(item_id, attributes.to_json()) for item_id, attributes in changes]
            )
        except (RedisError, OSError) as error:
            return _unavailable(error)
        await _refresh(services)
        return ItemsWritten(
            written=statuses.count(WRITTEN), refused=statuses.count(REFUSED), version=version
        )

    @router.delete("/items/{item_id:path}", responses=unavailable)
    async def delete_item(item_id: ItemId, request: Request) -> ItemDeleted:
        """Remove an item from the catalogue (it is then an item the catalogue does not list)."""
        services = services_of(request)
        try:
            version, statuses = await services.catalogue_store.write([(item_id, None)])
        except (RedisError, OSError) as error:
            return _unavailable(error)
        await _refresh(services)
        return ItemDeleted(item_id=item_id, deleted=statuses[0] == WRITTEN, version=version)

    @router.get("/items/{item_id:path}", responses={404: {"description": "not in the catalogue"}})
    async def get_item(item_id: ItemId, request: Request) -> ItemView:
        """An item's attributes as Redis holds them."""
        services = services_of(request)
        try:
            (value,) = await services.catalogue_store.get([item_id])
        except (RedisError, OSError) as error:
            return _unavailable(error)
        if value is None:
            return json_response({"detail": "not in the catalogue"}, 404)
        return ItemView(item_id=item_id, attributes=orjson.loads(value))

    return router


async def _refresh(services: Services) -> None:
    """This worker sees its own write at once (the others at their next poll)."""
    try:
        if await services.catalogue.refresh():
            await services.reindex()
    except (RedisError, OSError):  # stored; the watch catches up
        services.metrics.catalogue_refresh_failures.inc()


def _unavailable(error: Exception) -> Response:
    redis_errors.warning("/items: Redis unavailable: %s", error)
    return retry_later(REDIS_UNAVAILABLE + ": not stored, retry")
