"""POST /recommend: top-n items for a user, always by its deadline."""

import asyncio

from fastapi import APIRouter, Depends, Request, Response

from contract.attribution import new_recommendation_id
from service.admission import arrival
from service.api.deps import disconnect_probe, require_read_key, services_of
from service.api.responses import model_response
from service.bodies import JsonBody
from service.recommender import RecommendJob
from service.rules import resolve_rules
from service.schemas import RecommendInput, RecommendResponse

MODEL, POPULARITY = "model", "popularity"  # why an item is in the answer


def recommend_router(body: JsonBody, read_key: bool) -> APIRouter:
    """The route, reading `body` (its class is built from the settings); with `read_key`, a
    bearer key is required (COSREC_READ_API_KEY or COSREC_API_KEY)."""
    router = APIRouter(
        tags=["recommend"], dependencies=[Depends(require_read_key)] if read_key else []
    )

    @router.post(
        "/recommend",
        response_model=RecommendResponse,
        openapi_extra=body.openapi(),
        responses={503: {"description": "overloaded: retry after Retry-After seconds"}},
    )
    async def recommend(request: Request) -> Response:
        """Top-n items for a user from their last items in Redis (see `source`), honouring the
        business rules (filters; else the deployment's defaults). Answered by the deadline
        (COSREC_RECOMMEND_DEADLINE_MS): from popularity if Redis is late."""
        query: RecommendInput = await body.parse(request)
        services = services_of(request)
        deadline = arrival(request.scope) + services.recommend_deadline_s
        variant = services.experiment.assign(query.user_id)
        job = RecommendJob(
            query.user_id,
            query.n,
            query.exclude_seen,
            tuple(query.exclude),
            deadline,
            resolve_rules(query, services.default_rules),
            variant,
        )
        answer = services.recommendations.submit(job, disconnect_probe(request))
        try:
            async with asyncio.timeout_at(deadline):
                result = await answer
        except TimeoutError:  # the wait was cancelled: dropped if its batch had not started
            result = services.recommender.past_deadline(job)
        metrics = services.metrics
        if result.popularity_reason is not None:
            metrics.popularity.labels(result.popularity_reason).inc()
        name = services.variant_names[variant]
        from_model = result.from_model
        metrics.recommendations.labels(name, result.source).inc()
        if from_model:
            metrics.recommended_items.labels(name, MODEL).inc(from_model)
        if len(result.item_ids) > from_model:
            metrics.recommended_items.labels(name, POPULARITY).inc(
                len(result.item_ids) - from_model
            )
        rid = new_recommendation_id(name)
        if services.recorder is not None:
            services.recorder.record(query.user_id, rid, name, result.item_ids)
        response = RecommendResponse(
            user_id=query.user_id,
            items=[
                {"item_id": item, "score": score, "reason": MODEL if k < from_model else POPULARITY}
                for k, (item, score) in enumerate(zip(result.item_ids, result.scores, strict=True))
            ],
            model_version=result.model_version,
            source=result.source,
            recommendation_id=rid,
            variant=name,
        )
        return model_response(response)

    return router
