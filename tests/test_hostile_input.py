"""Hostile and malformed requests against a real `cosrec serve` with an API key: a clear 4xx
for each, bounded memory, the key required where it must be and never written to the log."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from contract.event_log import read_event_log
from contract.redis_layout import item_of_sequence_member, user_keys
from cosrec.processes import ServiceProcess, tree_rss_mb

API_KEY = "k3y-" + "Zq9x" * 8  # long and distinctive, so a grep of the log cannot miss it
WRONG_KEY = "wr0ng-" + "Pm4t" * 8
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_BODY = 64 * 1024  # small, so that the oversized cases stay cheap


@pytest.fixture(scope="module")
def keyed_service(main_bundle, redis_process, tmp_path_factory):
    service = ServiceProcess.start(
        main_bundle,
        redis_process.url,
        log_path=tmp_path_factory.mktemp("hostile") / "service.log",
        ready_route="/readyz",
        log_level="debug",
        api_key=API_KEY,
        reload_poll_s="0",
        max_body_bytes=str(MAX_BODY),
    )
    yield service
    service.stop()


@pytest.fixture
def http(keyed_service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed_service.url, headers=AUTH, timeout=30) as client:
        yield client


JSON = {"content-type": "application/json"}
ONE_EVENT = {"user_id": "h", "item_id": "i1"}

BAD_REQUESTS = {
    # name: (path, raw body, extra headers, expected status)
    "huge n": ("/recommend", json.dumps({"user_id": "h", "n": 10**12}), JSON, 422),
    "n zero": ("/recommend", json.dumps({"user_id": "h", "n": 0}), JSON, 422),
    "n 5000 digits": ("/recommend", '{"user_id": "h", "n": ' + "9" * 5000 + "}", JSON, 422),
    "n infinity": ("/recommend", '{"user_id": "h", "n": Infinity}', JSON, 422),
    "long user id": ("/recommend", json.dumps({"user_id": "u" * 10_000}), JSON, 422),
    "empty user id": ("/recommend", json.dumps({"user_id": ""}), JSON, 422),
    "lone surrogate id": ("/recommend", '{"user_id": "\\ud800"}', JSON, 422),
    "user id not a string": ("/recommend", json.dumps({"user_id": ["x"]}), JSON, 422),
    "unknown field": ("/recommend", json.dumps({"user_id": "h", "admin": True}), JSON, 422),
    "too many excludes": (
        "/recommend",
        json.dumps({"user_id": "h", "exclude": ["i1"] * 10_001}),
        JSON,
        422,
    ),
    "not an object": ("/recommend", "[1, 2, 3]", JSON, 422),
    "not json": ("/recommend", "user_id=h", JSON, 422),
    "empty body": ("/recommend", "", JSON, 422),
    "nested 20k deep": ("/recommend", "[" * 20_000 + "]" * 20_000, JSON, 422),
    "text/plain": ("/recommend", json.dumps({"user_id": "h"}), {"content-type": "text/plain"}, 415),
    "form encoded": (
        "/recommend",
        "user_id=h",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
    ),
    "NaN timestamp": (
        "/events",
        '{"events": [{"user_id": "h", "item_id": "i1", "timestamp": NaN}]}',
        JSON,
        422,
    ),
    "negative timestamp": (
        "/events",
        json.dumps({"events": [{**ONE_EVENT, "timestamp": -1}]}),
        JSON,
        422,
    ),
    "millisecond timestamp": (
        "/events",
        json.dumps({"events": [{**ONE_EVENT, "timestamp": 1.7e12}]}),
        JSON,
        422,
    ),
    "no events": ("/events", json.dumps({"events": []}), JSON, 422),
    "event unknown field": (
        "/events",
        json.dumps({"events": [{**ONE_EVENT, "weight": 3}]}),
        JSON,
        422,
    ),
    "event without item": ("/events", json.dumps({"events": [{"user_id": "h"}]}), JSON, 422),
    "oversized body": ("/events", json.dumps({"events": [ONE_EVENT] * 20_000}), JSON, 413),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_clear_4xx(http, name):
    path, body, headers, expected = BAD_REQUESTS[name]
    reply = http.post(path, content=body.encode(), headers=headers)
    assert reply.status_code == expected, reply.text[:300]
    assert reply.json()["detail"]  # a message, not an empty error


@pytest.mark.parametrize("path", ["/recommend", "/events"])
def test_a_body_that_is_not_utf8_gets_422(http, path):
    reply = http.post(path, content=b'{"user_id": "\xff\xfe"}', headers=JSON)
    assert reply.status_code == 422
    assert reply.json()["detail"]


def test_binary_looking_ids_are_stored_and_read_back_exactly(http, redis_process):
    user = "\u202e\U0001f600}{:*?\u2028 "
    item = "i46\u00a0\ufeff:{evil}"
    reply = http.post("/events", json={"events": [{"user_id": user, "item_id": item}]})
    assert reply.status_code == 200
    assert reply.json()["accepted"] == 1
    raw = redis.Redis.from_url(redis_process.url)
    keys = user_keys("cosrec", user)
    try:
        assert [item_of_sequence_member(m) for m in raw.zrange(keys.sequence, 0, -1)] == [
            item.encode()
        ]
        assert raw.zrange(keys.seen, 0, -1) == [item.encode()]
        assert [(u, i) for u, i, _ in read_event_log(raw) if u == user] == [(user, item)]
    finally:
        raw.close()
    recommended = http.post("/recommend", json={"user_id": user, "n": 3})
    assert recommended.status_code == 200
    assert recommended.json()["user_id"] == user


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/events", {"events": [{"user_id": "h", "item_id": "i46\u0000evil"}]}, "item_id"),
        ("/events", {"events": [{"user_id": "h\u0001", "item_id": "i1"}]}, "user_id"),
        (
            "/events",
            {"events": [{"user_id": "h", "item_id": "i1", "event_id": "e\n1"}]},
            "event_id",
        ),
        ("/recommend", {"user_id": "h\u007f"}, "user_id"),
        ("/recommend", {"user_id": "h", "exclude": ["x\u0000"]}, "exclude"),
    ],
    ids=["nul-item", "control-user", "newline-event-id", "del-user", "nul-exclude"],
)
def test_ids_with_control_characters_get_422_naming_the_field(http, path, body, where):
    """Ids never change between request, sequence, seen set and log: a NUL once cut an item id
    short inside the events script, so control characters are refused (issue 12, hole 2)."""
    reply = http.post(path, json=body)
    assert reply.status_code == 422
    assert where in reply.json()["detail"][0]["loc"]


def test_a_far_future_timestamp_gets_422_and_a_slightly_ahead_clock_is_accepted(http):
    now = time.time()
    ahead = {"events": [{"user_id": "clock", "item_id": "i1", "timestamp": now + 60}]}
    assert http.post("/events", json=ahead).status_code == 200
    far = {"events": [{"user_id": "clock", "item_id": "i2", "timestamp": 99999999999}]}
    reply = http.post("/events", json=far)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "events", 0, "timestamp"]
    beyond_skew = {"events": [{"user_id": "clock", "item_id": "i2", "timestamp": now + 3600}]}
    assert http.post("/events", json=beyond_skew).status_code == 422


def test_an_oversized_stream_without_length_is_cut_off_with_413(keyed_service):
    """A chunked body never says how long it is: the service must stop reading it, answer 413
    and close, long before the client is done (a raw socket, so that what the server sent is
    read even when it closes while the client is still sending)."""
    head = (
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b'{"user_id": "h", "item_id": "i1"},' * 30
    sent = 0
    with socket.create_connection(("127.0.0.1", keyed_service.port), timeout=10) as sock:
        sock.sendall(head.encode() + b'c\r\n{"events": [\r\n')
        try:
            while sent < 50 * MAX_BODY:
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:
            pass  # the server closed: it stopped reading
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert sent < 50 * MAX_BODY  # cut off before the client had sent it all
    assert httpx.get(keyed_service.url + "/healthz").status_code == 200


def test_memory_stays_bounded_under_large_and_oversized_requests(keyed_service, http):
    big_valid = {"user_id": "h", "n": 1000, "exclude": [f"x{k}" for k in range(5000)]}
    oversized = json.dumps({"events": [ONE_EVENT] * 20_000}).encode()

    def round_of_requests() -> None:
        for _ in range(30):
            assert http.post("/recommend", json=big_valid).status_code == 200
            assert http.post("/events", content=oversized, headers=JSON).status_code == 413

    round_of_requests()  # warm-up: allocator pools, lazily built code paths
    start_mb = tree_rss_mb(keyed_service.process.pid)
    for _ in range(3):
        round_of_requests()
    end_mb = tree_rss_mb(keyed_service.process.pid)
    print(f"service RSS {start_mb:.1f} MiB -> {end_mb:.1f} MiB over 180 large requests")
    assert end_mb < start_mb * 1.10


@pytest.mark.parametrize(
    ("path", "body"),
    [("/events", {"events": [ONE_EVENT]}), ("/admin/reload", None)],
    ids=["events", "reload"],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {WRONG_KEY}"},
        {"Authorization": API_KEY},
        {"Authorization": f"Bearer {API_KEY[:-1]}"},
        {"Authorization": f"Basic {API_KEY}"},
    ],
    ids=["none", "wrong", "no-scheme", "prefix", "basic"],
)
def test_write_and_admin_routes_need_the_key(keyed_service, path, body, headers):
    reply = httpx.post(keyed_service.url + path, json=body, headers=headers)
    assert reply.status_code == 401
    assert reply.json()["detail"]


def test_the_key_opens_write_and_admin_routes_and_reads_need_none(keyed_service, http):
    assert http.post("/events", json={"events": [ONE_EVENT]}).status_code == 200
    assert http.post("/admin/reload").status_code == 200
    anonymous = httpx.post(keyed_service.url + "/recommend", json={"user_id": "h"})
    assert anonymous.status_code == 200


def test_the_key_is_never_logged_nor_served(keyed_service, http):
    """Runs after the other tests of the module: the log holds all their traffic."""
    for headers in ({}, {"Authorization": f"Bearer {WRONG_KEY}"}, AUTH):
        httpx.post(keyed_service.url + "/events", json={"events": [ONE_EVENT]}, headers=headers)
    http.post("/events", content=b'{"events": [', headers=JSON)  # an error path too
    served = "".join(http.get(path).text for path in ("/metrics", "/openapi.json", "/readyz"))
    log = keyed_service.log_text()
    assert "Application startup complete" in log  # the log really is the service's
    for secret in (API_KEY, WRONG_KEY, API_KEY[4:20]):
        assert secret not in log
        assert secret not in served
