"""ASGI middleware that counts and times every HTTP request (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time

from service.metrics import Metrics

# Methods get their own label value; any other token httptools accepts (PROPFIND, PURGE...)
# shares one, so a client cannot grow the number of series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ITEMS_PREFIX, ITEM_ROUTE = "/items/", "/items/{item_id}"


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route (unknown paths share one label)."""

    def __init__(self, app, metrics: Metrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            path = scope["path"]
            if path in self.routes:
                route = path
            elif path.startswith(ITEMS_PREFIX):  # one label for every item id
                route = ITEM_ROUTE
            else:
                route = "other"
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
