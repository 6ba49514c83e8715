"""The FastAPI application: thin routes over the bundle holder, the store and two batchers."""

# No `from __future__ import annotations` here: the request bodies are classes built from the
# settings at run time, and FastAPI must see them as real annotations of the route functions.

import asyncio
import contextlib
import dataclasses
import gc
import hmac
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import multiprocess
from redis.exceptions import RedisError

from service.batching import GreedyBatcher
from service.bodies import JsonBody, document_bodies
from service.ingest import EventWriter
from service.metrics import Metrics, multiprocess_dir
from service.middleware import RequestMetricsMiddleware
from service.recommender import Recommendation, Recommender, RecommendJob, RedisUnavailableError
from service.reloading import BundleHolder
from service.schemas import (
    EventsResponse,
    RecommendResponse,
    ReloadResponse,
    request_schemas,
)
from service.settings import Settings
from service.store import RedisStore, connect

log = logging.getLogger("cosrec.service")

ROUTES = ("/recommend", "/events", "/healthz", "/readyz", "/metrics", "/admin/reload")
FLOOR_ROUTE = "/bench/floor"
FLOOR_BODY = orjson.dumps(
    {
        "user_id": "floor",
        "items": [{"item_id": str(i), "score": 1.0 - i / 10} for i in range(10)],
        "model_version": "floor",
        "source": "floor",
    }
)


@dataclass
class Services:
    """Everything the routes use; built in the lifespan (one set per worker process)."""

    holder: BundleHolder
    store: RedisStore
    recommendations: GreedyBatcher[RecommendJob, Recommendation]
    writer: EventWriter


def _json(content: object, status_code: int = 200) -> Response:
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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.bundle is None:
        raise ValueError("no bundle: set COSREC_BUNDLE or pass --bundle")
    bundle_path = settings.bundle
    schemas = request_schemas(settings)
    recommend_body = JsonBody(schemas.recommend, settings.max_body_bytes)
    events_body = JsonBody(schemas.events, settings.max_body_bytes)
    metrics = Metrics()
    services: Services | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal services
        holder = BundleHolder(bundle_path, settings.device, settings.ort_threads, metrics)
        client = connect(settings)
        store = RedisStore(
            client,
            settings.key_prefix,
            settings.max_history,
            settings.max_event_ids,
            settings.redis_timeout_s,
            metrics,
        )
        recommender = Recommender(
            lambda: holder.current,
            store,
            metrics,
            settings.history_window_factor,
            settings.redis_fallback,
        )
        wait_s = settings.max_wait_ms / 1000
        services = Services(
            holder,
            store,
            GreedyBatcher(
                recommender.process, settings.max_batch, wait_s, settings.batches_in_flight
            ),
            EventWriter(store, lambda: holder.current, metrics, settings.max_batch, wait_s),
        )
        services.recommendations.start()
        services.writer.start()
        # Everything made so far (modules, the app, the bundle) lives as long as the process:
        # out of the collector's reach, a full collection no longer walks it (measured here:
        # full collections of ~50 ms each, the tail of /recommend's latency, before this).
        # Collect first, so start-up's garbage is not kept forever.
        gc.collect()
        gc.freeze()
        watcher = None
        if settings.reload_poll_s > 0:
            watcher = asyncio.create_task(holder.watch(settings.reload_poll_s))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await services.recommendations.stop()
            await services.writer.stop()
            recommender.close()
            await client.aclose()
            if multiprocess_dir() is not None:
                multiprocess.mark_process_dead(os.getpid())

    app = FastAPI(
        title="cosrec",
        version="0.1.0",
        description="Sequential recommendations from CosRec, with users' histories in Redis.",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks look for providers on every request (~4% of one here);
        # the service reports through Prometheus (/metrics)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    routes = frozenset((*ROUTES, FLOOR_ROUTE) if settings.bench_floor else ROUTES)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, routes=routes)
    bearer = HTTPBearer(auto_error=False, description="the COSREC_API_KEY, when one is set")
    expected_key = settings.api_key.get_secret_value().encode() if settings.api_key else None

    # async: FastAPI runs a plain `def` dependency in a thread pool, a thread hand-off on
    # every write request
    async def require_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if expected_key is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        # compare_digest: the time taken does not reveal how much of the key matched
        if not hmac.compare_digest(given, expected_key):
            raise HTTPException(
                401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> Response:
        return _json({"detail": [_client_error(e) for e in error.errors()]}, 422)

    @app.exception_handler(RedisUnavailableError)
    async def redis_unavailable(_: Request, error: RedisUnavailableError) -> Response:
        return _json({"detail": str(error)}, 503)

    @app.post(
        "/recommend", response_model=RecommendResponse, openapi_extra=recommend_body.openapi()
    )
    async def recommend(request: Request) -> Response:
        """Top-n items for a user from their last items in Redis (see `source`)."""
        assert services is not None
        body = await recommend_body.parse(request)
        job = RecommendJob(body.user_id, body.n, body.exclude_seen, tuple(body.exclude))
        result = await services.recommendations.submit(job)
        return _json(
            {
                "user_id": body.user_id,
                "items": [
                    {"item_id": item, "score": score}
                    for item, score in zip(result.item_ids, result.scores, strict=True)
                ],
                "model_version": result.model_version,
                "source": result.source,
            }
        )

    @app.post(
        "/events",
        response_model=EventsResponse,
        dependencies=[Depends(require_key)],
        openapi_extra=events_body.openapi(),
    )
    async def events(request: Request) -> Response:
        """Store events; a 200 means Redis has every accepted one (retries: same event_id)."""
        assert services is not None
        body = await events_body.parse(request)
        try:
            counts = await services.writer.write(body.events)
        except (RedisError, OSError) as error:
            detail = f"redis unavailable: {error}; retry with the same event_ids"
            return _json({"detail": detail}, 503)
        return _json(dataclasses.asdict(counts))

    @app.get("/healthz")
    async def healthz() -> Response:
        """The process is alive."""
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        """Ready when a bundle is loaded and Redis answers."""
        assert services is not None
        redis_ok = await services.store.ping()
        body = {
            "ready": redis_ok,
            "redis": "ok" if redis_ok else "unreachable",
            "model_version": services.holder.current.model_version,
        }
        return _json(body, 200 if redis_ok else 503)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        """Prometheus text format (summed over workers)."""
        content, content_type = metrics.exposition()
        return Response(content, media_type=content_type)

    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        dependencies=[Depends(require_key)],
        responses={409: {"model": ReloadResponse, "description": "refused; old bundle serves"}},
    )
    async def reload() -> Response:
        """Load the bundle path again; a bundle that fails to verify leaves the old one serving."""
        assert services is not None
        result = await services.holder.reload()
        body = {"reloaded": result.reloaded, "model_version": result.model_version}
        if result.error is not None:
            body["error"] = result.error
        return _json(body, 200 if result.reloaded else 409)

    if settings.bench_floor:

        @app.post(FLOOR_ROUTE, response_model=RecommendResponse, include_in_schema=False)
        async def floor(request: Request) -> Response:
            """Benchmark floor: validates a /recommend body as /recommend does, answers a
            constant."""
            await recommend_body.parse(request)
            return Response(FLOOR_BODY, media_type="application/json")

    document_bodies(app, [recommend_body, events_body])

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (`service.app:app_from_env`): every worker reads COSREC_* itself."""
    if not log.handlers:  # uvicorn configures only its own loggers
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     cosrec: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return create_app(Settings())
