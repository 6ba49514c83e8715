"""Redis stays bounded (issue 12, hole 10): every per-user key has a bound and expires when its
user goes idle, event ids are remembered for their TTL, the log is trimmed by length and age,
and the service says when Redis memory nears its limit, refusing writes (503) at the limit
without dropping anything acknowledged."""

from __future__ import annotations

import time

import pytest
import redis

from contract.redis_layout import user_keys
from cosrec.processes import RedisProcess, free_port
from service.retention import AGE_TRIM_EVERY


@pytest.fixture
def raw(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def events(user: str, first: int, count: int, prefix: str = "e") -> dict:
    return {
        "events": [
            {
                "user_id": user,
                "item_id": f"i{k % 30 + 1}",
                "timestamp": k,
                "event_id": f"{prefix}{k}",
            }
            for k in range(first, first + count)
        ]
    }


def test_every_key_of_a_user_expires_after_the_idle_ttl(make_client, raw):
    client = make_client(user_ttl_s=100)
    assert client.post("/events", json=events("ida", 1, 3)).json()["accepted"] == 3
    for key in user_keys("cosrec", "ida").all():
        assert raw.exists(key), key
        assert 0 < raw.pttl(key) <= 100_000, key


def test_event_ids_are_forgotten_after_their_ttl(make_client, raw):
    client = make_client(event_id_ttl_s=0.5)
    assert client.post("/events", json=events("jo", 1, 1)).json()["accepted"] == 1
    assert client.post("/events", json=events("jo", 1, 1)).json()["duplicates"] == 1
    time.sleep(0.6)
    # the age trim runs once every AGE_TRIM_EVERY events of a user
    assert client.post("/events", json=events("jo", 2, AGE_TRIM_EVERY, "f")).status_code == 200
    assert raw.zscore(user_keys("cosrec", "jo").event_ids, "e1") is None
    assert client.post("/events", json=events("jo", 1, 1)).json()["accepted"] == 1  # a new event


def test_the_log_is_trimmed_by_length(make_client, raw):
    client = make_client(log_max_len=5)
    assert client.post("/events", json=events("kim", 1, 8)).json()["accepted"] == 8
    entries = raw.xrange(user_keys("cosrec", "kim").log)
    assert [fields[b"eid"] for _, fields in entries] == [b"e%d" % k for k in range(4, 9)]


def test_the_log_is_trimmed_by_age(make_client, raw):
    client = make_client(log_max_age_s=0.5)
    assert client.post("/events", json=events("lea", 1, 3, "old")).json()["accepted"] == 3
    time.sleep(0.6)
    assert client.post("/events", json=events("lea", 4, AGE_TRIM_EVERY)).status_code == 200
    kept = [fields[b"eid"] for _, fields in raw.xrange(user_keys("cosrec", "lea").log)]
    assert len(kept) == AGE_TRIM_EVERY
    assert not any(eid.startswith(b"old") for eid in kept)


@pytest.fixture
def small_redis(tmp_path):
    server = RedisProcess(free_port(), tmp_path / "redis", ("--maxmemory", "50mb")).start()
    yield server
    server.stop()


def test_readyz_reports_redis_memory_and_writes_fail_cleanly_at_the_limit(make_client, small_redis):
    client = make_client(redis_url=small_redis.url, redis_memory_poll_s=0.05)
    ready = client.get("/readyz").json()
    assert ready["redis_memory"]["max_bytes"] == 50 * 1024 * 1024
    assert ready["redis_memory"]["near_limit"] is False

    raw = small_redis.client()
    used = int(raw.info("memory")["used_memory"])
    raw.config_set("maxmemory", used + 200_000)  # noeviction is Redis's default policy
    stored = 0
    for batch in range(200):
        answer = client.post("/events", json=events(f"m{batch}", 1, 50))
        if answer.status_code != 200:
            break
        stored += answer.json()["accepted"]
    assert answer.status_code == 503  # the limit was reached: refused, not half-kept
    assert "Redis unavailable" in answer.json()["detail"]
    time.sleep(0.2)
    ready = client.get("/readyz").json()
    assert ready["redis_memory"]["near_limit"] is True
    assert "cosrec_redis_memory_max_bytes" in client.get("/metrics").text
    # everything acknowledged is still there: noeviction drops nothing
    logged = sum(raw.xlen(user_keys("cosrec", f"m{b}").log) for b in range(batch))
    assert logged == stored
    assert client.post("/recommend", json={"user_id": "m0"}).status_code == 200  # reads go on
    raw.close()
