"""ASGI middleware that counts and times every HTTP request (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time

from service.metrics import Metrics


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
            route = path if path in self.routes else "other"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
