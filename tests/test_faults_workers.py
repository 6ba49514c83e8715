"""Two uvicorn workers: many clients write one user's events at once (order and dedup hold
across processes), and a worker killed under load leaves the service answering."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from contract.event_log import read_event_log
from contract.redis_layout import user_keys
from cosrec.processes import ServiceProcess, wait_until, worker_pids
from faults import MixedLoad, kill_process, stored_rows


@pytest.fixture(scope="module")
def two_workers(main_bundle, redis_process, tmp_path_factory):
    service = ServiceProcess.start(
        main_bundle,
        redis_process.url,
        log_path=tmp_path_factory.mktemp("workers") / "service.log",
        ready_route="/readyz",
        workers=2,
        reload_poll_s="0",
    )
    yield service
    service.stop()


@pytest.fixture
def raw(redis_process):
    client = redis.Redis.from_url(redis_process.url)
    client.flushall()
    yield client
    client.close()


def test_one_user_written_by_many_clients_at_once(two_workers, raw):
    """120 distinct events, each sent twice by different clients in random batches: every one
    stored once, the sequence and the log in timestamp order."""
    shuffler = random.Random(7)
    events = [
        {
            "user_id": "hot",
            "item_id": f"item-{k}",
            "timestamp": float(shuffler.randrange(40)),
            "event_id": f"e{k}",
        }
        for k in range(120)
    ]
    sends = events + events  # every event retried once
    shuffler.shuffle(sends)
    batches = []
    while sends:
        size = shuffler.randint(1, 5)
        batches.append(sends[:size])
        sends = sends[size:]
    replies: list[dict] = []

    def client(share: list[list[dict]]) -> None:
        with httpx.Client(base_url=two_workers.url, timeout=30) as http:
            for batch in share:
                reply = http.post("/events", json={"events": batch})
                assert reply.status_code == 200, reply.text
                replies.append(reply.json())

    threads = [threading.Thread(target=client, args=(batches[k::8],)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sum(r["accepted"] for r in replies) == 120
    assert sum(r["duplicates"] for r in replies) == 120
    keys = user_keys("cosrec", "hot")
    stored = raw.zrange(keys.sequence, 0, -1, withscores=True)
    stored_items = [member.split(b":", 1)[1].decode() for member, _ in stored]
    assert sorted(stored_items) == sorted(e["item_id"] for e in events)  # each exactly once
    timestamp_of = {e["item_id"]: e["timestamp"] for e in events}
    assert [timestamp_of[i] for i in stored_items] == sorted(timestamp_of.values())
    assert [score for _, score in stored] == sorted(timestamp_of.values())
    logged = [row for row in read_event_log(raw) if row[0] == "hot"]
    assert sorted(logged) == sorted(("hot", e["item_id"], e["timestamp"]) for e in events)
    assert [ts for _, _, ts in logged] == sorted(ts for _, _, ts in logged)


def test_a_worker_killed_under_load(two_workers, raw, main_bundle):
    items = json.loads((Path(main_bundle) / "manifest.json").read_text())["items"]
    victim = worker_pids(two_workers.process.pid)[0]
    with MixedLoad(two_workers.url, items, clients=4) as load:
        time.sleep(1.0)
        kill_process(victim)
        killed_at = time.monotonic()
        time.sleep(3.0)
        outcomes = load.stop()
    # uvicorn's supervisor starts a replacement worker
    wait_until(
        lambda: (
            len(worker_pids(two_workers.process.pid)) == 2
            and victim not in worker_pids(two_workers.process.pid)
        ),
        30,
        "no replacement worker",
    )
    fresh = [
        httpx.post(two_workers.url + "/recommend", json={"user_id": "load-1"}) for _ in range(20)
    ]

    failed = [o for o in outcomes if o.status != 200]
    after = [o for o in outcomes if o.sent > killed_at + 0.5]
    # at most the requests in flight on the killed worker's connections fail, once per client
    assert len(failed) <= load.clients, Counter(o.status for o in outcomes)
    assert all(o.status == 200 for o in after)
    assert {o.route for o in after} == {"events", "recommend"}
    assert all(reply.status_code == 200 for reply in fresh)
    assert stored_rows(outcomes) <= set(read_event_log(raw))
    print(f"requests around the kill: {Counter((o.route, o.status) for o in outcomes)}")
