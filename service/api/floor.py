"""POST /bench/floor, the serving benchmark's baseline (mounted when settings.bench_floor).

It validates a /recommend body as /recommend does and answers a constant, bytes made once.
"""

from fastapi import APIRouter, Request, Response

from service.bodies import JsonBody
from service.schemas import RecommendResponse, ScoredItem

FLOOR_ROUTE = "/bench/floor"
_ANSWER = RecommendResponse(
    user_id="floor",
    items=[ScoredItem(item_id=str(i), score=1.0 - i / 10, reason="model") for i in range(10)],
    model_version="floor",
    source="floor",
    recommendation_id="floor.000000000000000000000000",
    variant="floor",
)
FLOOR_BODY = _ANSWER.model_dump_json().encode()


def floor_router(body: JsonBody) -> APIRouter:
    """The route, reading `body`: the JsonBody of /recommend."""
    router = APIRouter()

    @router.post(FLOOR_ROUTE, include_in_schema=False)
    async def floor(request: Request) -> Response:
        """Validates the body, answers FLOOR_BODY."""
        await body.parse(request)
        return Response(FLOOR_BODY, media_type="application/json")

    return router
