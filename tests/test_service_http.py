"""Black-box: `cosrec serve` as a real uvicorn process over real HTTP, with a real Redis."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import redis

from contract.redis_layout import user_keys
from cosrec.processes import ServiceProcess


def version(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["model_version"]


def test_events_then_recommendations_over_http(live_service, bundle_dir):
    url = live_service.url
    events = [{"user_id": "web", "item_id": f"i{k}", "timestamp": k} for k in range(1, 8)]
    stored = httpx.post(f"{url}/events", json={"events": events})
    assert stored.json() == {"accepted": 7, "duplicates": 0, "conflicts": 0, "unknown_items": 0}

    body = httpx.post(f"{url}/recommend", json={"user_id": "web", "n": 5}).json()

    assert body["source"] == "model"
    assert body["model_version"] == version(bundle_dir)
    assert len(body["items"]) == 5
    assert not {i["item_id"] for i in body["items"]} & {e["item_id"] for e in events}
    assert httpx.get(f"{url}/readyz").status_code == 200
    assert httpx.get(f"{url}/docs").status_code == 200
    metrics = httpx.get(f"{url}/metrics").text
    assert "cosrec_events_accepted_total 7.0" in metrics


def test_concurrent_retried_events_for_one_user(live_service, redis_url):
    """Many clients, every event sent twice: stored once each, in timestamp order."""
    events = [
        {"user_id": "busy", "item_id": f"i{k % 30 + 1}", "timestamp": 1000 - k, "event_id": str(k)}
        for k in range(120)
    ]

    async def send_all() -> list[int]:
        async with httpx.AsyncClient(base_url=live_service.url) as client:
            chunks = [events[k : k + 10] for k in range(0, len(events), 10)]
            replies = await asyncio.gather(
                *(client.post("/events", json={"events": c}) for c in chunks + chunks[::-1])
            )
        return [r.json()["accepted"] for r in replies]

    accepted = asyncio.run(send_all())
    raw = redis.Redis.from_url(redis_url)
    try:
        members = raw.zrange(user_keys("cosrec", "busy").sequence, 0, -1, withscores=True)
        log_length = raw.xlen(user_keys("cosrec", "busy").log)
    finally:
        raw.close()
    assert sum(accepted) == 120
    assert log_length == 120
    assert [score for _, score in members] == sorted(1000.0 - k for k in range(120))


def test_reload_under_load_fails_no_request(live_service, bundle_dir, other_bundle):
    """Requests run while the watcher swaps the bundle: none fails, versions switch."""
    old, new = version(bundle_dir), version(other_bundle)

    async def load() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_service.url) as client:
            replies: list[httpx.Response] = []

            async def worker() -> None:
                while not replies or replies[-1].json()["model_version"] != new:
                    replies.append(await client.post("/recommend", json={"user_id": "u2"}))
                for _ in range(5):
                    replies.append(await client.post("/recommend", json={"user_id": "u2"}))

            async def publish() -> None:
                await asyncio.sleep(0.3)
                staging = bundle_dir.with_name("staging")
                shutil.copytree(other_bundle, staging)
                retired = bundle_dir.with_name("retired")
                bundle_dir.rename(retired)
                staging.rename(bundle_dir)

            await asyncio.wait_for(asyncio.gather(publish(), *(worker() for _ in range(8))), 30)
            return replies

    replies = asyncio.run(load())
    assert all(r.status_code == 200 for r in replies)
    versions = [r.json()["model_version"] for r in replies]
    assert versions[0] == old
    assert versions[-1] == new
    assert set(versions) == {old, new}


def test_two_workers_serve_and_metrics_sum_over_them(bundle_dir, redis_url):
    service = ServiceProcess.start(bundle_dir, redis_url, workers=2)
    try:
        for k in range(40):  # a fresh connection each: the kernel spreads them over workers
            reply = httpx.post(f"{service.url}/recommend", json={"user_id": f"u{k % 5 + 1}"})
            assert reply.status_code == 200
        metrics = httpx.get(f"{service.url}/metrics").text
    finally:
        service.stop()
    line = 'cosrec_http_requests_total{method="POST",route="/recommend",status="200"}'
    assert f"{line} 40.0" in metrics
