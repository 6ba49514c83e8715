"""The black-box checks against a 3-node Redis Cluster on loopback (primaries only, each with
its append-only file fsynced on every write), including a node's crash and restart."""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest

from contract.redis_layout import user_keys
from cosrec.processes import ServiceProcess
from faults import (
    MixedLoad,
    RedisClusterProcesses,
    logged_events,
    stored_rows,
)

RECOVERY_LIMIT_S = 15.0
OUTAGE_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    processes = RedisClusterProcesses.create(tmp_path_factory.mktemp("cluster"))
    yield processes
    processes.stop()


@pytest.fixture(scope="module")
def cluster_service(cluster, main_bundle, tmp_path_factory):
    service = ServiceProcess.start(
        main_bundle,
        cluster.url,
        log_path=tmp_path_factory.mktemp("cluster-service") / "service.log",
        ready_route="/readyz",
        redis_cluster="true",
        reload_poll_s="0",
    )
    yield service
    service.stop()


@pytest.fixture
def items(main_bundle) -> list[str]:
    return json.loads((main_bundle / "manifest.json").read_text())["items"]


def node_ports(cluster: RedisClusterProcesses, users: list[str]) -> dict[str, int]:
    return {user: cluster.node_of_key(user_keys("cosrec", user).sequence).port for user in users}


def test_events_recommendations_and_log_on_a_cluster(cluster, cluster_service, items):
    users = [f"spread-{k}" for k in range(30)]
    assert len(set(node_ports(cluster, users).values())) == 3  # every node holds some users
    events = [
        {
            "user_id": user,
            "item_id": items[(k + j) % len(items)],
            "timestamp": float(10 * k + j),
            "event_id": f"{user}-{j}",
        }
        for k, user in enumerate(users)
        for j in range(6)
    ]
    url = cluster_service.url
    first = httpx.post(url + "/events", json={"events": events}, timeout=30)
    retry = httpx.post(url + "/events", json={"events": events[:50]}, timeout=30)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "accepted": len(events),
        "duplicates": 0,
        "conflicts": 0,
        "unknown_items": 0,
    }
    assert retry.json() == {"accepted": 0, "duplicates": 50, "conflicts": 0, "unknown_items": 0}
    for user in users[:5]:
        body = httpx.post(url + "/recommend", json={"user_id": user, "n": 5}).json()
        assert body["source"] == "model"
        seen = {e["item_id"] for e in events if e["user_id"] == user}
        assert not seen & {i["item_id"] for i in body["items"]}
    assert httpx.get(url + "/readyz").status_code == 200
    client = cluster.client()
    try:
        logged = [row for row in logged_events(client) if row[0] in users]
    finally:
        client.close()
    assert sorted(logged) == sorted((e["user_id"], e["item_id"], e["timestamp"]) for e in events)


def test_a_cluster_node_crash_and_restart_under_load(cluster, cluster_service, items):
    with MixedLoad(cluster_service.url, items, clients=4, users=20) as load:
        time.sleep(1.5)
        victim = cluster.nodes[1]
        on_victim = {
            u
            for u, port in node_ports(cluster, [f"load-{k}" for k in range(20)]).items()
            if port == victim.port
        }
        crash_at = time.monotonic()  # a request answered before this met a healthy cluster
        victim.crash()
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)  # past cluster-node-timeout: the cluster itself reports the failure
        restart_at = time.monotonic()
        victim.start()  # same port and directory: its nodes.conf and append-only file
        cluster.wait_healthy(RECOVERY_LIMIT_S)
        recovered_at = _wait_for_write(cluster_service.url, items[0], RECOVERY_LIMIT_S)
        time.sleep(1.5)
        outcomes = load.stop()

    before = [o for o in outcomes if o.answered < crash_at]
    during = [o for o in outcomes if o.sent > down_at and o.answered < restart_at]
    after = [o for o in outcomes if o.sent > recovered_at + 1.0]
    assert before
    assert after
    assert all(o.status == 200 for o in before), Counter(o.status for o in before)
    # never a 200, while the node was down, for an event of a user whose slot it serves
    writes_during = [o for o in during if o.route == "events"]
    assert not [o for o in writes_during if o.event["user_id"] in on_victim and o.status == 200]
    # and the outage was seen: the client's cluster retries may hold a request for seconds
    assert any(o.status == 503 for o in outcomes if o.route == "events" and o.sent > down_at)
    for o in (o for o in during if o.route == "recommend"):
        assert o.status in (200, 503)
        if o.status == 200 and o.body["user_id"] in on_victim:
            assert o.body["source"] == "popularity_fallback"
    assert recovered_at - restart_at < RECOVERY_LIMIT_S
    late = [
        (o.route, round(o.sent - recovered_at, 2), o.status, o.body)
        for o in after
        if o.status != 200
    ]
    assert not late
    assert {o.status for o in outcomes} <= {200, 503}
    client = cluster.client()
    try:
        logged = logged_events(client)
    finally:
        client.close()
    assert stored_rows(outcomes) <= set(logged)
    assert len(logged) == len(set(logged))
    print(
        f"cluster node {victim.port} down {restart_at - down_at:.1f} s; requests: "
        f"{Counter((o.route, o.status) for o in outcomes)}; back "
        f"{recovered_at - restart_at:.2f} s after its restart began"
    )


def test_readyz_is_unready_while_a_primary_is_down(cluster, cluster_service):
    victim = cluster.nodes[2]
    victim.crash()
    try:
        time.sleep(0.5)
        statuses = {
            httpx.get(cluster_service.url + "/readyz", timeout=10).status_code for _ in range(5)
        }
    finally:
        victim.start()
        cluster.wait_healthy(RECOVERY_LIMIT_S)
    assert statuses == {503}


def _wait_for_write(url: str, item: str, limit_s: float) -> float:
    """When a fresh event for a user on every node is answered 200 again."""
    deadline = time.monotonic() + limit_s
    probe = {"events": [{"user_id": f"probe-{k}", "item_id": item} for k in range(30)]}
    while time.monotonic() < deadline:
        if httpx.post(url + "/events", json=probe, timeout=10).status_code == 200:
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"no event stored within {limit_s} s of the node's restart")
