"""Redis hangs (SIGSTOP) and comes back (SIGCONT): every request is answered by its deadline
(recommendations from popularity, events 503 with Retry-After and nothing of Redis's address),
work of clients that gave up is dropped unstarted, a 503 is safe to retry even when Redis
applied the write after it, and the service recovers without a restart.

Real processes only: a redis-server of each test's own, `cosrec serve`, real HTTP, signals.
The latency figures are bench/faults.py's; the bounds here are generous on purpose.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from contract.event_log import read_event_log
from cosrec.processes import RedisProcess, ServiceProcess, free_port, wait_until
from faults import RecordingMixedLoad, metric_samples, row_of, shed_count, stored_rows

RECOMMEND_DEADLINE_S = 0.3
EVENTS_DEADLINE_S = 1.0
MARGIN_S = 1.0  # past a deadline, on a shared machine: far above the measured tens of ms
HANG_S = 4.0
RECOVERY_LIMIT_S = 10.0


@pytest.fixture
def own_redis(tmp_path: Path):
    server = RedisProcess(free_port(), tmp_path / "redis").start()
    yield server
    resume(server)  # a stopped process would hold SIGTERM until continued
    server.crash()


def hang(server: RedisProcess) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)


def resume(server: RedisProcess) -> None:
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)


def start_service(bundle: Path, redis_url: str, tmp_path: Path, **settings: str):
    defaults = {
        "recommend_deadline_ms": str(int(RECOMMEND_DEADLINE_S * 1000)),
        "events_deadline_ms": str(int(EVENTS_DEADLINE_S * 1000)),
        "reload_poll_s": "0",
    }
    return ServiceProcess.start(
        bundle,
        redis_url,
        log_path=tmp_path / "service.log",
        ready_route="/readyz",
        **{**defaults, **settings},
    )


def wait_ready(url: str, limit_s: float) -> float:
    """Seconds until /readyz answers 200 (TimeoutError after limit_s)."""
    started = time.monotonic()
    wait_until(
        lambda: httpx.get(url + "/readyz", timeout=5).status_code == 200,
        limit_s,
        "the service was not ready again",
    )
    return time.monotonic() - started


def manifest_items(bundle: Path) -> list[str]:
    return json.loads((bundle / "manifest.json").read_text())["items"]


def test_a_hung_redis_gets_fallbacks_and_503s_by_the_deadlines_then_recovers_without_restart(
    own_redis, bundle_dir, tmp_path
):
    items = manifest_items(bundle_dir)
    service = start_service(bundle_dir, own_redis.url, tmp_path)
    pid = service.process.pid
    user = "with-history"
    history = [
        {"user_id": user, "item_id": items[k], "timestamp": 100.0 + k, "event_id": f"h{k}"}
        for k in range(6)
    ]
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            assert http.post("/events", json={"events": history}).status_code == 200
            with RecordingMixedLoad(service.url, items, clients=4) as load:
                time.sleep(1.0)
                hang(own_redis)
                stopped_at = time.monotonic()
                time.sleep(0.5)
                alive = http.get("/healthz")
                ready_while_hung = http.get("/readyz")
                time.sleep(max(0.0, stopped_at + HANG_S - time.monotonic()))
                resumed_at = time.monotonic()
                resume(own_redis)
                recovered_s = wait_ready(service.url, RECOVERY_LIMIT_S)
                recovered_at = time.monotonic()
                time.sleep(1.0)
                outcomes = load.stop()
            recommended = http.post("/recommend", json={"user_id": user, "n": 5})
            later = {"user_id": user, "item_id": items[0], "timestamp": 200.0}
            written = http.post("/events", json={"events": [later]})
            ready = http.get("/readyz")

            # a 503 is safe to retry: some of these may have been applied after their 503
            refused = [o.event for o in outcomes if o.route == "events" and o.status == 503]
            assert refused
            retried = http.post("/events", json={"events": refused})
        assert service.process.poll() is None
        assert service.process.pid == pid
        log_text = service.log_text()
    finally:
        service.stop()

    assert {o.status for o in outcomes} <= {200, 503}, Counter(o.status for o in outcomes)
    assert alive.status_code == 200
    assert ready_while_hung.status_code == 503

    # Sent while Redis was stopped, early enough that the answer was due before SIGCONT.
    def sent_in_hang(route: str, deadline_s: float) -> list:
        last_send = resumed_at - deadline_s - MARGIN_S
        return [o for o in outcomes if o.route == route and stopped_at < o.sent < last_send]

    recommends = sent_in_hang("recommend", RECOMMEND_DEADLINE_S)
    assert recommends
    assert all(o.status == 200 for o in recommends), Counter(o.status for o in recommends)
    assert {o.body["source"] for o in recommends} == {"popularity_fallback"}
    slowest = max(o.answered - o.sent for o in recommends)
    assert slowest < RECOMMEND_DEADLINE_S + MARGIN_S, slowest

    events = sent_in_hang("events", EVENTS_DEADLINE_S)
    assert events
    assert all(o.status == 503 for o in events), Counter(o.status for o in events)
    assert all(o.retry_after is not None and int(o.retry_after) >= 1 for o in events)
    redis_port = str(own_redis.port)
    for o in events:  # nothing of Redis's address (the detail goes to the log)
        assert "127.0.0.1" not in o.text, o.text
        assert redis_port not in o.text, o.text
    slowest = max(o.answered - o.sent for o in events)
    assert slowest < EVENTS_DEADLINE_S + MARGIN_S, slowest

    # recovered by itself, same process: model recommendations, confirmed writes, ready
    assert recovered_s < RECOVERY_LIMIT_S
    after = [o for o in outcomes if o.sent > recovered_at]
    assert after
    assert all(o.status == 200 for o in after), Counter(o.status for o in after)
    assert recommended.status_code == 200
    assert recommended.json()["source"] == "model"
    assert written.status_code == 200
    assert written.json()["accepted"] == 1
    assert ready.status_code == 200

    counts = retried.json()
    assert retried.status_code == 200, counts
    assert counts["conflicts"] == 0
    assert counts["accepted"] + counts["duplicates"] == len(refused)

    client = own_redis.client()
    try:
        logged = Counter(read_event_log(client))
    finally:
        client.close()
    assert max(logged.values()) == 1  # nothing stored twice
    expected = stored_rows(outcomes) | {row_of(e) for e in refused} | {row_of(e) for e in history}
    expected.add(row_of(later))
    assert set(logged) == expected, log_text[-2000:]
    print(
        f"{len(recommends)} recommendations in the hang, all fallback, slowest "
        f"{max(o.answered - o.sent for o in recommends) * 1000:.0f} ms; {len(events)} events "
        f"503; {len(refused)} refused events retried: {counts['accepted']} accepted, "
        f"{counts['duplicates']} already applied after their 503; ready "
        f"{recovered_s:.2f} s after SIGCONT"
    )


def _post_in_thread(
    url: str, path: str, body: dict, timeout_s: float, into: list
) -> threading.Thread:
    def send() -> None:
        try:
            into.append(httpx.post(url + path, json=body, timeout=timeout_s).status_code)
        except httpx.TimeoutException:
            into.append("gave up")

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_requests_whose_client_gave_up_in_a_hang_are_shed_as_client_gone_and_never_run(
    own_redis, bundle_dir, tmp_path
):
    """Both batch slots of /recommend and the one of /events are held by requests waiting on
    the stopped Redis; requests queued behind them whose clients give up (0.2 s) are dropped
    when their turn comes: counted as client_gone, and their events never reach Redis."""
    deadline_s = 2.0  # long beside the clients' 0.2 s: the order below holds on a slow machine
    impatient_s = 0.2
    service = start_service(
        bundle_dir,
        own_redis.url,
        tmp_path,
        recommend_deadline_ms=str(int(deadline_s * 1000)),
        events_deadline_ms=str(int(deadline_s * 1000)),
        batches_in_flight="2",
        redis_memory_poll_s="0",
    )
    items = manifest_items(bundle_dir)
    impatient_events = [
        {"user_id": f"gone-{k}", "item_id": items[k], "timestamp": 10.0, "event_id": f"g{k}"}
        for k in range(6)
    ]
    patient: list = []
    gave_up: list = []
    try:
        hang(own_redis)
        # /recommend: two batches in flight, each held until its deadline
        holders = []
        for user in ("hold-a", "hold-b"):
            body = {"user_id": user, "n": 3}
            holders.append(_post_in_thread(service.url, "/recommend", body, 10, patient))
            time.sleep(0.3)
        impatient = [
            _post_in_thread(
                service.url, "/recommend", {"user_id": f"gone-{k}"}, impatient_s, gave_up
            )
            for k in range(6)
        ]
        # /events: one batch at a time, held until its deadline
        body = {"events": [{"user_id": "hold-c", "item_id": items[0], "event_id": "hold"}]}
        holders.append(_post_in_thread(service.url, "/events", body, 10, patient))
        time.sleep(0.3)
        impatient += [
            _post_in_thread(service.url, "/events", {"events": [event]}, impatient_s, gave_up)
            for event in impatient_events
        ]
        for thread in holders + impatient:
            thread.join(15)

        def dropped() -> float:
            samples = metric_samples(service.url)
            return shed_count(samples, "/recommend", "client_gone") + shed_count(
                samples, "/events", "client_gone"
            )

        wait_until(lambda: dropped() >= 12, 10, "the abandoned requests were not dropped")
        resume(own_redis)
        wait_ready(service.url, RECOVERY_LIMIT_S)
        samples = metric_samples(service.url)
    finally:
        resume(own_redis)
        service.stop()

    assert gave_up == ["gave up"] * 12
    assert sorted(patient) == [200, 200, 503]  # two fallbacks, one unconfirmed write
    assert shed_count(samples, "/recommend", "client_gone") == 6
    assert shed_count(samples, "/events", "client_gone") == 6
    requests = "cosrec_http_requests_total"
    closed = sum(
        value for (name, labels), value in samples.items()
        if name == requests and ("status", "499") in labels
    )  # fmt: skip
    assert closed == 12
    client = own_redis.client()
    try:
        logged = {row[0] for row in read_event_log(client)}
    finally:
        client.close()
    assert not logged & {event["user_id"] for event in impatient_events}  # never ran


def test_events_applied_after_their_503_count_once_when_retried(own_redis, bundle_dir, tmp_path):
    """The write reaches Redis (a pooled connection), Redis stops before replying: 503. On
    SIGCONT Redis applies it anyway. Retrying the request, plus new events, stores nothing
    twice and the counts add up."""
    service = start_service(bundle_dir, own_redis.url, tmp_path, redis_memory_poll_s="0")
    items = manifest_items(bundle_dir)
    events = [
        {"user_id": f"user-{u}", "item_id": items[e], "timestamp": 50.0 + e, "event_id": f"{u}-{e}"}
        for u in range(3)
        for e in range(2)
    ]
    fresh = [
        {"user_id": "user-0", "item_id": items[5], "timestamp": 60.0, "event_id": "new-0"},
        {"user_id": "user-9", "item_id": items[6], "timestamp": 60.0, "event_id": "new-1"},
    ]
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            warm = {"user_id": "warm", "item_id": items[0], "timestamp": 1.0, "event_id": "w"}
            assert http.post("/events", json={"events": [warm]}).status_code == 200
            hang(own_redis)
            refused = http.post("/events", json={"events": events})
            resume(own_redis)
            wait_ready(service.url, RECOVERY_LIMIT_S)
            client = own_redis.client()
            try:
                applied_meanwhile = set(read_event_log(client)) & {row_of(e) for e in events}
            finally:
                client.close()
            retried = http.post("/events", json={"events": events + fresh})
    finally:
        service.stop()

    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert applied_meanwhile == {row_of(e) for e in events}  # "not confirmed", yet stored
    assert retried.status_code == 200
    counts = retried.json()
    assert (counts["accepted"], counts["duplicates"], counts["conflicts"]) == (2, 6, 0)
    client = own_redis.client()
    try:
        logged = Counter(read_event_log(client))
    finally:
        client.close()
    assert max(logged.values()) == 1
    assert set(logged) == {row_of(e) for e in [warm, *events, *fresh]}
