"""Failover: a primary, a replica and three Sentinels (real redis-server processes on loopback);
the primary is SIGKILLed under one-event-per-request load. With COSREC_REPLICA_ACKS=1 a 200
means a replica had the events too, so none of them is lost when the replica is promoted; the
service follows the Sentinels to the new primary by itself.

How many acknowledged events are lost without the setting is bench/faults.py's figure.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from contract.event_log import read_event_log
from cosrec.processes import ReplicatedRedis, ServiceProcess, wait_until
from faults import EventLoad, row_of, stored_rows

FAILOVER_LIMIT_S = 20.0


@pytest.fixture
def replicated_redis(tmp_path: Path):
    group = ReplicatedRedis.start(tmp_path / "redis", replicas=1, sentinels=3)
    yield group
    group.stop()


def test_no_event_answered_200_is_lost_when_the_primary_dies_with_replica_acks(
    replicated_redis, bundle_dir, tmp_path
):
    items = json.loads((bundle_dir / "manifest.json").read_text())["items"]
    service = ServiceProcess.start(
        bundle_dir,
        "redis://127.0.0.1:1/0",  # unused: the Sentinels name the primary
        log_path=tmp_path / "service.log",
        ready_route="/readyz",
        reload_poll_s="0",
        redis_sentinels=replicated_redis.sentinel_addresses,
        replica_acks="1",
    )
    history = [
        {"user_id": "with-history", "item_id": items[k], "timestamp": 100.0 + k} for k in range(6)
    ]
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            assert http.post("/events", json={"events": history}).status_code == 200
            old = replicated_redis.primary()
            with EventLoad(service.url, items, clients=4) as load:
                time.sleep(1.5)
                killed_at = time.monotonic()  # answers after this may already see it gone
                old.crash()
                new = replicated_redis.wait_failover(old.port, FAILOVER_LIMIT_S)
                promoted_s = time.monotonic() - killed_at
                # the promoted primary has no replica left: with REPLICA_ACKS=1 nothing can be
                # confirmed until the old primary's host rejoins as a replica
                replicated_redis.rejoin(old)
                rejoined_at = time.monotonic()

                def confirmed_again() -> bool:
                    return any(o.sent > rejoined_at and o.stored for o in list(load.outcomes))

                wait_until(confirmed_again, FAILOVER_LIMIT_S, "no event confirmed after it")
                serving_again_s = time.monotonic() - killed_at
                time.sleep(1.0)
                outcomes = load.stop()
            recommended = http.post("/recommend", json={"user_id": "with-history", "n": 5})
            ready = http.get("/readyz")
        log_text = service.log_text()
    finally:
        service.stop()

    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 503}, (statuses, log_text[-2000:])
    before = [o for o in outcomes if o.answered < killed_at]
    assert before
    assert all(o.status == 200 for o in before), Counter(o.status for o in before)
    assert all(o.retry_after is not None for o in outcomes if o.status == 503)

    client = new.client()
    try:
        logged = Counter(read_event_log(client))
    finally:
        client.close()
    acknowledged = stored_rows(outcomes) | {row_of(e) for e in history}
    lost = acknowledged - set(logged)
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged events lost"
    assert max(logged.values()) == 1
    sent = {row_of(o.event) for o in outcomes} | {row_of(e) for e in history}
    assert set(logged) <= sent

    # the service follows the Sentinels by itself: writes and model recommendations again
    after = [o for o in outcomes if o.sent > rejoined_at + 0.5]
    assert after
    assert all(o.status == 200 for o in after), Counter(o.status for o in after)
    assert recommended.status_code == 200
    assert recommended.json()["source"] == "model"
    assert ready.status_code == 200
    print(
        f"{len(acknowledged)} events acknowledged, all on the promoted replica "
        f"({statuses[503]} answered 503); promoted {promoted_s:.1f} s after the kill, "
        f"writes confirmed again {serving_again_s:.1f} s after it"
    )
