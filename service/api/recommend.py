"""POST /recommend: top-n items for a user."""

from fastapi import APIRouter, Request

from service.api.deps import services_of
from service.bodies import JsonBody
from service.recommender import RecommendJob
from service.schemas import RecommendInput, RecommendResponse


def recommend_router(body: JsonBody) -> APIRouter:
    """The route, reading `body` (its class is built from the settings)."""
    router = APIRouter(tags=["recommend"])

    @router.post("/recommend", openapi_extra=body.openapi())
    async def recommend(request: Request) -> RecommendResponse:
        """Top-n items for a user from their last items in Redis (see `source`)."""
        query: RecommendInput = await body.parse(request)
        job = RecommendJob(query.user_id, query.n, query.exclude_seen, tuple(query.exclude))
        result = await services_of(request).recommendations.submit(job)
        return RecommendResponse(
            user_id=query.user_id,
            items=[
                {"item_id": item, "score": score}
                for item, score in zip(result.item_ids, result.scores, strict=True)
            ],
            model_version=result.model_version,
            source=result.source,
        )

    return router
