"""Overload: far more concurrent clients than the bounded queues admit. The service sheds the
excess at once with 503 and Retry-After (counted as overloaded), answers nothing else, and
serves normally as soon as the load is gone.

Real processes only: a redis-server of the test's own, `cosrec serve`, real HTTP. How far it
bends at 10x its capacity is bench/faults.py's figure.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from cosrec.processes import RedisProcess, ServiceProcess, free_port
from faults import metric_samples, shed_count

MAX_QUEUED = 8
CLIENTS = 128
LOAD_S = 4.0


@pytest.fixture
def own_redis(tmp_path: Path):
    server = RedisProcess(free_port(), tmp_path / "redis").start()
    yield server
    server.crash()


async def _clients(url: str, items: list[str], until: float) -> list[tuple[str, int, str | None]]:
    """CLIENTS concurrent clients, each alternating /recommend and one-event /events until
    `until`; (route, status, Retry-After) of every answer (status 0: no HTTP answer)."""
    answers: list[tuple[str, int, str | None]] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    async def client(http: httpx.AsyncClient, number: int) -> None:
        for sequence in range(1 << 30):
            if time.monotonic() > until:
                return
            user = f"crowd-{number % 32}"
            if sequence % 2:
                route, body = "/recommend", {"user_id": user, "n": 5}
            else:
                event = {"user_id": user, "item_id": items[sequence % len(items)]}
                route, body = "/events", {"events": [{**event, "event_id": f"{number}-{sequence}"}]}
            try:
                reply = await http.post(route, json=body)
                answers.append((route, reply.status_code, reply.headers.get("retry-after")))
            except httpx.TransportError:
                answers.append((route, 0, None))

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(http, number) for number in range(CLIENTS)))
    return answers


def test_overload_is_shed_with_503_and_retry_after_and_the_service_keeps_serving(
    own_redis, bundle_dir, tmp_path
):
    items = json.loads((bundle_dir / "manifest.json").read_text())["items"]
    service = ServiceProcess.start(
        bundle_dir,
        own_redis.url,
        log_path=tmp_path / "service.log",
        ready_route="/readyz",
        reload_poll_s="0",
        max_queued_requests=str(MAX_QUEUED),
    )
    history = [
        {"user_id": "with-history", "item_id": items[k], "timestamp": 100.0 + k} for k in range(6)
    ]
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            assert http.post("/events", json={"events": history}).status_code == 200
            answers = asyncio.run(_clients(service.url, items, time.monotonic() + LOAD_S))
            shed_during = metric_samples(service.url)
            # the load is gone: normal service at once, nothing shed
            after = [
                http.post("/recommend", json={"user_id": "with-history", "n": 5}),
                http.post("/events", json={"events": [{"user_id": "later", "item_id": items[1]}]}),
                http.get("/readyz"),
            ]
        alive = service.process.poll() is None
        log_text = service.log_text()
    finally:
        service.stop()

    statuses = Counter(status for _, status, _ in answers)
    assert set(statuses) <= {200, 503}, (statuses, log_text[-2000:])
    assert statuses[200] > 0
    assert statuses[503] > 0, statuses  # the bound was reached: shedding happened
    retry_after = [value for _, status, value in answers if status == 503]
    assert all(value is not None and int(value) >= 1 for value in retry_after)
    # every 503 was shed by the queue bound (nothing failed): the metric says so too
    shed = sum(shed_count(shed_during, route, "overloaded") for route in ("/recommend", "/events"))
    assert shed == statuses[503]

    assert alive
    assert [reply.status_code for reply in after] == [200, 200, 200]
    assert after[0].json()["source"] == "model"
    assert after[1].json()["accepted"] == 1
    by_route = Counter((route, status) for route, status, _ in answers)
    print(f"{len(answers)} answers in {LOAD_S:g} s from {CLIENTS} clients: {dict(by_route)}")
