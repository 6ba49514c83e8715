"""GET /healthz, /readyz and /metrics: is the process alive, can it serve, how has it served."""

from fastapi import APIRouter, Response

from service.api.deps import MetricsDep, ServicesDep
from service.schemas import HealthResponse, ReadyResponse, RedisMemory

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> HealthResponse:
    """The process is alive."""
    return HealthResponse(status="ok")


@router.get("/readyz", responses={503: {"model": ReadyResponse, "description": "not ready"}})
async def readyz(services: ServicesDep, response: Response) -> ReadyResponse:
    """Ready when a bundle is loaded and Redis answers within the /recommend deadline (a probe
    gets its answer quickly, also while Redis hangs); says when Redis memory nears its limit
    (writes fail at the limit: the service stays ready to recommend)."""
    redis_ok = await services.store.ping(services.recommend_deadline_s)
    if not redis_ok:
        response.status_code = 503
    memory = services.memory.last
    return ReadyResponse(
        ready=redis_ok,
        redis="ok" if redis_ok else "unreachable",
        model_version=services.holder.current.model_version,
        precision=services.holder.current.precision,
        redis_memory=None
        if memory is None
        else RedisMemory(
            used_bytes=memory.used_bytes,
            max_bytes=memory.max_bytes,
            near_limit=services.memory.near_limit,
        ),
    )


@router.get("/metrics")
async def metrics_route(metrics: MetricsDep) -> Response:
    """Prometheus text format (summed over workers)."""
    content, content_type = metrics.exposition()
    return Response(content, media_type=content_type)
