"""Redis semantics through the API: time order, dedup, bounds, the durable log, outages,
and the metrics that count all of it (real redis-server, in-process app)."""

from __future__ import annotations

import json
import subprocess

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from test_service_reload import publish, version

from contract.event_log import read_event_log
from contract.redis_layout import user_keys
from cosrec.processes import free_port, redis_server_binary, wait_until


@pytest.fixture
def raw(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def items(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def stored_sequence(raw: redis.Redis, user: str) -> list[str]:
    members = raw.zrange(user_keys("cosrec", user).sequence, 0, -1)
    return [m.split(b":", 1)[1].decode() for m in members]


def test_sequence_is_in_time_order_ties_in_arrival_order(client, raw):
    events = [
        {"user_id": "ann", "item_id": "i3", "timestamp": 30},
        {"user_id": "ann", "item_id": "i1", "timestamp": 10},
        {"user_id": "ann", "item_id": "i5", "timestamp": 20},
        {"user_id": "ann", "item_id": "i4", "timestamp": 20},
    ]
    client.post("/events", json={"events": events[:2]})
    client.post("/events", json={"events": events[2:]})  # out of order: lands in its place
    assert stored_sequence(raw, "ann") == ["i1", "i5", "i4", "i3"]


def test_retried_event_id_counts_once(client, raw):
    event = {"user_id": "bob", "item_id": "i2", "timestamp": 5, "event_id": "e-1"}
    first = client.post("/events", json={"events": [event, {**event}]}).json()
    retry = client.post("/events", json={"events": [event]}).json()
    assert first == {"accepted": 1, "duplicates": 1, "conflicts": 0, "unknown_items": 0}
    assert retry == {"accepted": 0, "duplicates": 1, "conflicts": 0, "unknown_items": 0}
    assert stored_sequence(raw, "bob") == ["i2"]
    assert raw.xlen(user_keys("cosrec", "bob").log) == 1


def test_history_is_bounded_but_the_log_keeps_everything(make_client, raw):
    client = make_client(max_history=5, max_event_ids=3)
    events = [
        {"user_id": "cy", "item_id": f"i{k}", "timestamp": k, "event_id": f"e{k}"}
        for k in range(1, 9)
    ]
    assert client.post("/events", json={"events": events}).json()["accepted"] == 8
    keys = user_keys("cosrec", "cy")
    assert stored_sequence(raw, "cy") == ["i4", "i5", "i6", "i7", "i8"]
    assert raw.zcard(keys.event_ids) == 3
    assert raw.xlen(keys.log) == 8
    assert raw.zrange(keys.seen, 0, -1) == [f"i{k}".encode() for k in range(1, 9)]


def test_history_stays_bounded_one_event_at_a_time_and_after_a_lost_counter(make_client, raw):
    client = make_client(max_history=5, max_event_ids=3)
    keys = user_keys("cosrec", "dee")
    for k in range(1, 8):  # one event a call: the trims run once the counter passes the bounds
        event = {"user_id": "dee", "item_id": f"i{k}", "timestamp": k, "event_id": f"e{k}"}
        assert client.post("/events", json={"events": [event]}).json()["accepted"] == 1
    assert stored_sequence(raw, "dee") == ["i3", "i4", "i5", "i6", "i7"]
    assert raw.zcard(keys.event_ids) == 3
    raw.delete(keys.counter)  # evicted or deleted: the counter starts again from 0
    event = {"user_id": "dee", "item_id": "i8", "timestamp": 8, "event_id": "e8"}
    assert client.post("/events", json={"events": [event]}).json()["accepted"] == 1
    assert stored_sequence(raw, "dee") == ["i4", "i5", "i6", "i7", "i8"]
    assert raw.zcard(keys.event_ids) == 3


def test_unknown_items_are_stored_counted_and_seen_by_id(client, raw):
    """An item the serving bundle does not know is still remembered as seen, by its id: a
    later bundle that knows it must not recommend it back (issue 12, hole 3)."""
    events = [
        {"user_id": "dee", "item_id": "i1", "timestamp": 1},
        {"user_id": "dee", "item_id": "brand-new", "timestamp": 2},
    ]
    assert client.post("/events", json={"events": events}).json() == {
        "accepted": 2,
        "duplicates": 0,
        "conflicts": 0,
        "unknown_items": 1,
    }
    keys = user_keys("cosrec", "dee")
    assert stored_sequence(raw, "dee") == ["i1", "brand-new"]
    assert raw.zrange(keys.seen, 0, -1) == [b"i1", b"brand-new"]


def test_event_log_reads_back_every_event(client, raw):
    odd_users = ["a}b:{c", "ü", "cosrec:{u:00}:log"]
    events = [
        {"user_id": user, "item_id": f"i{k}", "timestamp": 100 - k, "event_id": f"{user}-{k}"}
        for user in odd_users
        for k in range(3)
    ]
    client.post("/events", json={"events": events})
    client.post("/events", json={"events": events[:2]})  # retries: not logged twice

    rows = list(read_event_log(raw))

    expected = sorted((e["user_id"], e["item_id"], float(e["timestamp"])) for e in events)
    assert sorted(rows) == expected
    for user in odd_users:  # each user's rows in time order
        times = [ts for u, _, ts in rows if u == user]
        assert times == sorted(times)
    # every key of a user shares one hash tag, so Redis Cluster keeps them in one slot
    for user in odd_users:
        tags = {key.split("{", 1)[1].split("}", 1)[0] for key in user_keys("cosrec", user).all()}
        assert len(tags) == 1


def test_redis_outage_503_then_recovery(make_client, redis_process, bundle_dir):
    popular = json.loads((bundle_dir / "manifest.json").read_text())["popularity"]["items"]
    fallback = make_client()
    strict = make_client(redis_fallback=False)
    event = {"events": [{"user_id": "eve", "item_id": "i1", "event_id": "x"}]}
    assert fallback.post("/events", json=event).status_code == 200

    redis_process.stop()
    response = fallback.post("/events", json=event)
    assert response.status_code == 503
    assert "Redis unavailable" in response.json()["detail"]
    body = fallback.post("/recommend", json={"user_id": "eve", "n": 3}).json()
    assert body["source"] == "popularity_fallback"
    assert items(body) == popular[:3]
    down = strict.post("/recommend", json={"user_id": "eve", "n": 3})
    assert down.status_code == 503
    assert "Redis unavailable" in down.json()["detail"]
    for answer in (response, down):  # the address stays in the log (issue 12, hole 11)
        assert answer.headers["retry-after"]
        assert "127.0.0.1" not in answer.text
        assert str(redis_process.port) not in answer.text
    assert fallback.get("/readyz").status_code == 503

    redis_process.start()  # empty, and without the script: the service must reload it
    assert fallback.get("/readyz").status_code == 200
    assert fallback.post("/events", json=event).json()["accepted"] == 1
    assert fallback.post("/recommend", json={"user_id": "eve"}).json()["source"] == "model"


def scrape(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_the_traffic(client, bundle_dir):
    version = json.loads((bundle_dir / "manifest.json").read_text())["model_version"]
    events = [{"user_id": "u1", "item_id": f"i{k}", "event_id": f"m{k}"} for k in range(1, 5)]
    events.append({"user_id": "u1", "item_id": "nowhere"})
    client.post("/events", json={"events": events})
    client.post("/events", json={"events": events[:2]})
    for _ in range(3):
        client.post("/recommend", json={"user_id": "u1"})
    client.post("/recommend", json={"user_id": "nobody"})
    client.post("/recommend", json={"n": 2})

    m = scrape(client)

    assert m[("cosrec_events_accepted_total", ())] == 5
    assert m[("cosrec_events_rejected_total", (("reason", "duplicate"),))] == 2
    assert m[("cosrec_events_unknown_items_total", ())] == 1
    assert m[("cosrec_popularity_fallbacks_total", (("reason", "no_history"),))] == 1
    requests = "cosrec_http_requests_total"
    assert m[(requests, (("method", "POST"), ("route", "/recommend"), ("status", "200")))] == 4
    assert m[(requests, (("method", "POST"), ("route", "/recommend"), ("status", "422")))] == 1
    assert m[(requests, (("method", "POST"), ("route", "/events"), ("status", "200")))] == 2
    latency = "cosrec_http_request_duration_seconds_count"
    assert m[(latency, (("route", "/recommend"),))] == 5
    assert m[("cosrec_inference_batch_size_count", ())] >= 1
    assert m[("cosrec_inference_batch_size_sum", ())] == 3
    assert m[("cosrec_inference_duration_seconds_count", ())] >= 1
    assert m[("cosrec_redis_duration_seconds_count", (("operation", "read"),))] >= 1
    assert m[("cosrec_redis_duration_seconds_count", (("operation", "events"),))] == 2
    assert m[("cosrec_bundle_info", (("model_version", version),))] == 1
    assert m[("cosrec_bundle_last_reload_timestamp_seconds", ())] > 1.7e9
    client.get("/no/such/path")
    assert scrape(client)[(requests, (("method", "GET"), ("route", "other"), ("status", "404")))]


@pytest.fixture
def sentinel_port(redis_process, tmp_path):
    """A Redis Sentinel watching the session's Redis as master 'mymaster'."""
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {redis_process.port} 1\n"
    )
    process = subprocess.Popen(
        [redis_server_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sentinel = redis.Redis(port=port)

    def knows_master() -> bool:
        try:
            return sentinel.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
        except redis.ConnectionError:
            return False

    try:
        wait_until(knows_master, 10, "the sentinel did not start")
        yield port
    finally:
        sentinel.close()
        process.terminate()
        process.wait(10)


def test_redis_through_sentinel(make_client, sentinel_port, raw):
    client = make_client(
        redis_sentinels=f"127.0.0.1:{sentinel_port}", redis_url="redis://127.0.0.1:1/0"
    )
    event = {"user_id": "sam", "item_id": "i1", "timestamp": 1}
    assert client.post("/events", json={"events": [event]}).json()["accepted"] == 1
    assert stored_sequence(raw, "sam") == ["i1"]
    assert client.post("/recommend", json={"user_id": "sam"}).json()["source"] == "model"
    assert client.get("/readyz").status_code == 200


def test_a_reused_event_id_with_other_content_is_a_conflict_not_a_duplicate(client, raw):
    first = {"user_id": "fay", "item_id": "i1", "timestamp": 5, "event_id": "pay-1"}
    assert client.post("/events", json={"events": [first]}).json()["accepted"] == 1
    other_item = {**first, "item_id": "i2"}
    other_time = {**first, "timestamp": 6}
    answer = client.post("/events", json={"events": [first, other_item, other_time]}).json()
    assert answer == {"accepted": 0, "duplicates": 1, "conflicts": 2, "unknown_items": 0}
    assert stored_sequence(raw, "fay") == ["i1"]  # the first content stays, nothing added
    assert scrape(client)[("cosrec_events_rejected_total", (("reason", "conflict"),))] == 2


def test_events_without_an_event_id_get_one_before_redis(client, raw):
    """So that no retry inside the Redis client can apply them twice: each is logged with a
    service-assigned id (a random 128-bit hex)."""
    events = [{"user_id": "gil", "item_id": f"i{k}", "timestamp": k} for k in range(1, 4)]
    assert client.post("/events", json={"events": events}).json()["accepted"] == 3
    entries = raw.xrange(user_keys("cosrec", "gil").log)
    ids = [fields[b"eid"] for _, fields in entries]
    assert len(set(ids)) == 3
    assert all(len(eid) == 32 and int(eid, 16) >= 0 for eid in ids)


def test_http_methods_and_bundle_versions_keep_the_metric_series_bounded(
    client, bundle_dir, main_bundle, other_bundle
):
    for method in ("PROPFIND", "MKCOL", "PURGE", "BREW"):
        client.request(method, "/recommend")
    methods = {
        labels.get("method")
        for name, labels_tuple in scrape(client)
        if name == "cosrec_http_requests_total"
        for labels in [dict(labels_tuple)]
    }
    assert methods <= {"GET", "POST", "other"}
    assert "other" in methods
    for source in (other_bundle, main_bundle, other_bundle):  # three versions loaded in turn
        publish(source, bundle_dir)
        assert client.post("/admin/reload").json()["reloaded"]
    info = [labels for name, labels in scrape(client) if name == "cosrec_bundle_info"]
    assert info == [(("model_version", version(other_bundle)),)]
