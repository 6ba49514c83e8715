"""Redis crashes in the middle of a mixed load and comes back: the service says 503 for events
it could not store, serves marked popularity meanwhile, recovers by itself, and every event it
answered 200 for is still in Redis afterwards (append-only file fsynced on every write)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from cosrec.processes import DurableRedis, ServiceProcess, free_port
from faults import MixedLoad, logged_events, stored_rows

OUTAGE_S = 2.5
RECOVERY_LIMIT_S = 10.0


@pytest.fixture
def durable_redis(tmp_path: Path):
    server = DurableRedis(free_port(), tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.crash()


def test_redis_crash_and_restart_under_load(durable_redis, bundle_dir, tmp_path):
    items = json.loads((bundle_dir / "manifest.json").read_text())["items"]
    service = ServiceProcess.start(
        bundle_dir,
        durable_redis.url,
        log_path=tmp_path / "service.log",
        ready_route="/readyz",
        reload_poll_s="0",
    )
    try:
        with MixedLoad(service.url, items, clients=4) as load:
            time.sleep(1.5)
            crash_at = time.monotonic()  # answers after this may already see Redis gone
            durable_redis.crash()
            down_at = time.monotonic()
            time.sleep(0.5)
            ready_during_outage = httpx.get(service.url + "/readyz", timeout=5)
            alive_during_outage = httpx.get(service.url + "/healthz", timeout=5)
            time.sleep(OUTAGE_S - 0.5)
            restart_at = time.monotonic()
            durable_redis.start()  # same port, same directory: Redis replays its append-only file
            _wait_ready(service.url, RECOVERY_LIMIT_S)
            recovered_after = time.monotonic() - restart_at
            time.sleep(1.5)
            outcomes = load.stop()
        log_text = service.log_text()
    finally:
        service.stop()

    assert ready_during_outage.status_code == 503
    assert ready_during_outage.json()["ready"] is False
    assert alive_during_outage.status_code == 200  # alive: route elsewhere, do not restart it
    assert recovered_after < RECOVERY_LIMIT_S

    before = [o for o in outcomes if o.answered < crash_at]
    during = [o for o in outcomes if o.sent > down_at and o.answered < restart_at]
    after = [o for o in outcomes if o.sent > restart_at + recovered_after]
    assert before
    assert during
    assert after
    assert all(o.status == 200 for o in before), Counter(o.status for o in before)

    events_during = [o for o in during if o.route == "events"]
    assert events_during
    assert all(o.status == 503 for o in events_during), Counter(o.status for o in events_during)
    assert all("Redis unavailable" in o.body["detail"] for o in events_during)
    for o in (o for o in during if o.route == "recommend"):
        assert o.status == 503 or (o.status == 200 and o.body["source"] == "popularity_fallback")

    # recovered by itself: writes and model recommendations work again, no service restart
    assert all(o.status == 200 for o in after), Counter(o.status for o in after)
    assert any(o.route == "recommend" and o.body["source"] == "model" for o in after)
    # no answer ever other than 200 or 503, and no connection ever refused or dropped
    assert {o.status for o in outcomes} <= {200, 503}, log_text[-2000:]

    client = durable_redis.client()
    try:
        logged = logged_events(client)
    finally:
        client.close()
    stored = stored_rows(outcomes)
    stored_before_crash = stored_rows(before)
    sent = {
        (o.event["user_id"], o.event["item_id"], o.event["timestamp"])
        for o in outcomes
        if o.route == "events"
    }
    assert stored_before_crash
    assert stored_before_crash <= set(logged)  # survived the crash
    assert stored <= set(logged)  # every 200 is in Redis
    assert len(logged) == len(set(logged))  # and none twice
    assert set(logged) <= sent  # and nothing that was never sent
    print(
        f"events answered 200: {len(stored)} (before the crash {len(stored_before_crash)}), "
        f"in the log: {len(logged)}, answered 503 during the outage: {len(events_during)}, "
        f"recovered {recovered_after:.2f} s after the restart began"
    )


def _wait_ready(url: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if httpx.get(url + "/readyz", timeout=2).status_code == 200:
            return
        time.sleep(0.05)
