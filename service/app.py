"""The FastAPI application: the routers of service.api over the services of service.lifespan."""

import logging

from fastapi import FastAPI
from fastapi.routing import APIRoute

from service.admission import AdmissionMiddleware
from service.api import admin, health
from service.api.errors import EXCEPTION_HANDLERS
from service.api.events import events_router
from service.api.floor import floor_router
from service.api.items import items_router
from service.api.recommend import recommend_router
from service.bodies import JsonBody, document_bodies
from service.catalogue import ItemAttributes
from service.lifespan import lifespan
from service.metrics import Metrics
from service.middleware import RequestMetricsMiddleware
from service.schemas import request_schemas
from service.settings import Settings

log = logging.getLogger("cosrec.service")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; each worker's services are built when it starts (service.lifespan)."""
    settings = settings or Settings()
    if settings.bundle is None:
        raise ValueError("no bundle: set COSREC_BUNDLE or pass --bundle")
    schemas = request_schemas(settings)
    recommend_body = JsonBody(schemas.recommend, settings.max_body_bytes)
    events_body = JsonBody(schemas.events, settings.max_body_bytes)
    item_body = JsonBody(ItemAttributes, settings.max_body_bytes)
    items_body = JsonBody(schemas.items, settings.max_body_bytes)

    routers = [
        recommend_router(recommend_body, read_key=settings.read_api_key is not None),
        events_router(events_body, write_key=settings.api_key is not None),
        items_router(item_body, items_body, settings.max_id_length),
    ]
    routers += [health.router, admin.router]
    if settings.bench_floor:
        routers.append(floor_router(recommend_body))
    app = FastAPI(
        title="cosrec",
        version="0.1.0",
        description="Sequential recommendations from CosRec, with users' histories in Redis.",
        # The routers' routes, flat: FastAPI 0.165's include_router adds a router that is
        # matched lazily, route by route, on every request (15 to 40 us more a request here).
        routes=[route for router in routers for route in router.routes],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        # FastAPI's OpenTelemetry hooks look for providers on every request (~4% of one here);
        # the service reports through Prometheus (/metrics)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    # the routes' own labels; any other path is counted as "other" (bounded label values)
    routes = frozenset(route.path for route in app.routes if isinstance(route, APIRoute))
    deadlines_s = {
        "/recommend": settings.recommend_deadline_ms / 1000,
        "/events": settings.events_deadline_ms / 1000,
    }
    # the last added runs first: every request is counted, shed ones included
    app.add_middleware(
        AdmissionMiddleware,
        metrics=app.state.metrics,
        deadlines_s=deadlines_s,
        max_in_flight=settings.max_in_flight,
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics, routes=routes)
    document_bodies(app, [recommend_body, events_body, item_body, items_body])
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (`service.app:app_from_env`): every worker reads COSREC_* itself."""
    if not log.handlers:  # uvicorn configures only its own loggers
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     cosrec: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return create_app(Settings())
