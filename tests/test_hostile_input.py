"""Hostile and malformed requests against a real `cosrec serve` with an API key: a clear 4xx
for each, bounded memory, the key required where it must be and never written to the log."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator

import httpx
import pytest

from conftest import REPO
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


def test_binary_looking_ids_are_stored_and_read_back(http):
    user = "\x00\x01\u202e\U0001f600}{:*?"
    reply = http.post("/events", json={"events": [{"user_id": user, "item_id": "\x7f\x00"}]})
    assert reply.status_code == 200
    assert reply.json()["accepted"] == 1
    recommended = http.post("/recommend", json={"user_id": user, "n": 3})
    assert recommended.status_code == 200
    assert recommended.json()["user_id"] == user


def test_an_oversized_stream_without_length_is_cut_off(keyed_service):
    """A chunked body never says how long it is: the service must stop reading it."""
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"events": ['
        while sent < 50 * MAX_BODY:
            sent += 1024
            yield b'{"user_id": "h", "item_id": "i1"},' * 30

    try:
        reply = httpx.post(
            keyed_service.url + "/events", content=endless(), headers={**AUTH, **JSON}, timeout=30
        )
    except (httpx.WriteError, httpx.RemoteProtocolError):
        reply = None  # the server answered and closed while the client was still sending
    if reply is not None:
        assert reply.status_code == 413
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


def test_the_key_comparison_is_constant_time():
    """Every comparison involving the API key goes through hmac.compare_digest."""
    tree = ast.parse((REPO / "service" / "api" / "deps.py").read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
    ]
    assert calls
    assert all(ast.unparse(c.func) == "hmac.compare_digest" for c in calls)
    key_names = {"expected_key", "api_key", "given"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
        ):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & key_names, ast.unparse(node)
