"""Fault benchmarks of issue 12: a hung Redis, 10x overload, a failover, and retention.

Real processes on loopback (cosrec.processes): redis-server, Redis Sentinel, `cosrec serve`
with an ML-1M-sized bundle (random weights, as bench/serve.py), and an open-loop load generator
written for the purpose (raw HTTP/1.1 keep-alive over asyncio; request k is due at
start + k / rate whatever the answers before it did, and its latency counts from then: no
coordinated omission). Every section writes its figures, the command, the machine and the
date into bench/results/faults.json (a run of some sections keeps the others' figures).

- hang: mixed open-loop load (half /recommend, half one-event /events) while Redis is
  SIGSTOPped, then SIGCONTed: /recommend latency and sources in the hang, /events statuses and
  latency, how long until everything is served normally again, with no restart.
- overload: the capacity of /recommend (closed loop, c=64), then open loops at 0.8x, 2x and
  10x it (clients give up after 2 s, at most 2,000 connections): statuses, sources and latency
  of what was answered, Retry-After on every 503, service RSS before/after; how fast the
  service sheds (queue bound 1: nearly every answer a 503); and, as a second opinion from a
  generator in C that leaves the service more CPU, wrk with 640 connections (10x c=64).
- failover: a primary, a replica and three Sentinels; one-event /events at a steady rate; the
  primary dies (SIGKILL); acknowledged events lost, with COSREC_REPLICA_ACKS 0 and 1, over a
  direct loopback link and over a link that holds the replication stream a few milliseconds
  (what it holds is lost with the primary's host).
- retention: bytes per user and per event (Redis used_memory delta and MEMORY USAGE per key),
  then a soak of new users at a steady rate with a short COSREC_USER_TTL_S: Redis memory
  against the prediction base + rate x TTL x bytes per user / (1 - Redis's 10% of expired keys
  not yet reclaimed).

    .venv/bin/python bench/faults.py [--quick] [--sections hang overload failover retention]
                                     [--bundle DIR] [--overload-factors 0.8 2 10]
                                     [--failover-repeats 2] [--link-delays-ms 0 10]

About 11 minutes on a 2-vCPU machine; --quick about 5.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import datetime
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serve import (  # noqa: E402  (bench/serve.py)
    http_post,
    metric_samples,
    recommend_requests,
    run_load,
)

from contract.event_log import read_event_log  # noqa: E402
from contract.redis_layout import USER_KEY_KINDS, user_keys  # noqa: E402
from cosrec.machine import describe_cpu  # noqa: E402
from cosrec.processes import (  # noqa: E402
    RedisProcess,
    ReplicatedRedis,
    ServiceProcess,
    free_port,
    tree_rss_mb,
    wait_until,
)

OUT = REPO / "bench" / "results" / "faults.json"
NUM_USERS, NUM_ITEMS = 6040, 3416  # the ML-1M-sized bundle's users "1".."6040", items "1".."3416"
HISTORY_EVENTS = 10  # events per user loaded before the hang and overload sections
# Clients of the overload give up after this (and close the connection), as clients and load
# balancers do; it also bounds the connections open at once to about rate x timeout.
OVERLOAD_CLIENT_TIMEOUT_S = 2.0
OVERLOAD_MAX_CONNECTIONS = 2_000  # beyond, a request waits for a connection (counted)
RECOMMEND_DEADLINE_S = 0.3  # the service's defaults (COSREC_RECOMMEND/EVENTS_DEADLINE_MS)
EVENTS_DEADLINE_S = 2.0
REDIS_STALE_EXPIRED = 0.10  # expired keys Redis may keep before reclaiming them (its default)


# ---------------------------------------------------------------- open-loop load generator
SOURCES = {b"model": 1, b"popularity": 2, b"popularity_fallback": 3}
SOURCE_NAMES = {0: "none", 1: "model", 2: "popularity", 3: "popularity_fallback", 4: "other"}
RETRY_AFTER, LEAKS_ADDRESS, ACCEPTED = 1, 2, 4  # flag bits of a reply
NOT_SENT, NO_ANSWER = -1, 0  # statuses of requests without an HTTP answer
STATUS_NAMES = {NOT_SENT: "not sent (no connection in time)", NO_ANSWER: "no answer in time"}


class Replies:
    """One row per request: tag (the caller's), due, sent and answered times (perf_counter),
    status, flags, source of a recommendation."""

    def __init__(self) -> None:
        self.tag = array.array("q")
        self.due = array.array("d")
        self.sent = array.array("d")
        self.answered = array.array("d")
        self.status = array.array("h")
        self.flags = array.array("b")
        self.source = array.array("b")

    def add(self, tag, due, sent, answered, status, flags=0, source=0) -> None:
        self.tag.append(tag)
        self.due.append(due)
        self.sent.append(sent)
        self.answered.append(answered)
        self.status.append(status)
        self.flags.append(flags)
        self.source.append(source)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name)) for name in vars(self)}


class _Connection(asyncio.Protocol):
    def __init__(self, load: OpenLoop) -> None:
        self.load = load
        self.buffer = b""
        self.request: tuple[int, float, float] | None = None  # tag, due, sent
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end > 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            request, self.request = self.request, None
            if request is not None:
                self.load.answered(self, request, int(head[9:12]), head, body)

    def connection_lost(self, _exc) -> None:
        self.load.lost(self)


class OpenLoop:
    """Requests at a steady rate on keep-alive connections: an idle one, else a new one (up
    to max_connections; beyond, a request waits for a connection, its latency still counted
    from its due time). `make(k)` gives request k's (tag, HTTP bytes).

    With `client_timeout_s`, a client gives up on a request unanswered that long after its
    due time, as real clients and load balancers do: it closes the connection (NO_ANSWER), or
    never sends a request still waiting for a connection (NOT_SENT)."""

    IDLE_REUSE_S = 4.0  # uvicorn closes keep-alive connections idle for 5 s

    def __init__(
        self,
        port: int,
        make: Callable[[int], tuple[int, bytes]],
        *,
        max_connections: int = 4000,
        client_timeout_s: float | None = None,
        leak_markers: tuple[bytes, ...] = (),
    ) -> None:
        self.port = port
        self.make = make
        self.max_connections = max_connections
        self.client_timeout_s = client_timeout_s
        self.leak_markers = leak_markers
        self.replies = Replies()
        self.stop = threading.Event()
        self.last_ok = 0.0  # perf_counter of the latest 200
        self._idle: list[_Connection] = []
        self._backlog: deque[tuple[int, bytes, float]] = deque()
        self._in_flight: set[_Connection] = set()
        self._open = 0
        self.peak_connections = 0
        self.connect_errors = 0
        self.gave_up = 0

    async def run(self, rate: float, duration_s: float | None, drain_s: float = 30.0) -> dict:
        """Send until duration_s (None: until `stop` is set), then wait up to drain_s (at
        most the client timeout) for the answers in flight; requests still waiting for a
        connection then are NOT_SENT, those still unanswered NO_ANSWER."""
        self._loop = asyncio.get_running_loop()
        sweeper = self._loop.create_task(self._sweep()) if self.client_timeout_s else None
        start = time.perf_counter()
        k = 0
        while not self.stop.is_set():
            now = time.perf_counter()
            if duration_s is not None and now - start >= duration_s:
                break
            while start + k / rate <= now:
                tag, payload = self.make(k)
                self._dispatch((tag, payload, start + k / rate))
                k += 1
            await asyncio.sleep(max(0.0, start + k / rate - time.perf_counter()))
        sending_s = time.perf_counter() - start
        now = time.perf_counter()
        for tag, _, due in self._backlog:
            self.replies.add(tag, due, now, now, NOT_SENT)
        self._backlog.clear()
        drain_until = now + min(drain_s, self.client_timeout_s or drain_s)
        while self._in_flight and time.perf_counter() < drain_until:
            await asyncio.sleep(0.05)
        if sweeper is not None:
            sweeper.cancel()
        now = time.perf_counter()
        for connection in list(self._in_flight):
            tag, due, sent = connection.request
            connection.request = None
            self.replies.add(tag, due, sent, now, NO_ANSWER)
        for connection in [*self._idle, *self._in_flight]:
            connection.transport.close()
        await asyncio.sleep(0.1)
        return {
            "scheduled": k,
            "sending_s": round(sending_s, 2),
            "offered_rps": round(k / sending_s, 1),
            "peak_connections": self.peak_connections,
            "connect_errors": self.connect_errors,
            "client_timeout_s": self.client_timeout_s,
            "client_gave_up": self.gave_up,
        }

    async def _sweep(self) -> None:
        """Every 50 ms: give up on requests past the client timeout."""
        while True:
            await asyncio.sleep(0.05)
            too_old = time.perf_counter() - self.client_timeout_s
            while self._backlog and self._backlog[0][2] < too_old:
                tag, _, due = self._backlog.popleft()
                self.replies.add(tag, due, due, time.perf_counter(), NOT_SENT)
                self.gave_up += 1
            for connection in [c for c in self._in_flight if c.request[1] < too_old]:
                tag, due, sent = connection.request
                connection.request = None
                self._in_flight.discard(connection)
                self.replies.add(tag, due, sent, time.perf_counter(), NO_ANSWER)
                self.gave_up += 1
                connection.transport.abort()

    def _dispatch(self, request: tuple[int, bytes, float]) -> None:
        while self._idle:
            connection = self._idle.pop()
            stale = time.perf_counter() - connection.idle_since > self.IDLE_REUSE_S
            if stale or connection.transport.is_closing():
                connection.transport.close()
                continue
            self._send(connection, request)
            return
        self._backlog.append(request)
        if self._open < self.max_connections:
            self._open += 1
            self.peak_connections = max(self.peak_connections, self._open)
            self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            _, connection = await self._loop.create_connection(
                lambda: _Connection(self), "127.0.0.1", self.port
            )
        except OSError:
            self._open -= 1
            self.connect_errors += 1
            return
        self._ready(connection)

    def _ready(self, connection: _Connection) -> None:
        if self._backlog:
            self._send(connection, self._backlog.popleft())
        else:
            connection.idle_since = time.perf_counter()
            self._idle.append(connection)

    def _send(self, connection: _Connection, request: tuple[int, bytes, float]) -> None:
        tag, payload, due = request
        connection.request = (tag, due, time.perf_counter())
        self._in_flight.add(connection)
        connection.transport.write(payload)

    def answered(self, connection, request, status: int, head: bytes, body: bytes) -> None:
        now = time.perf_counter()
        self._in_flight.discard(connection)
        flags = RETRY_AFTER if b"\r\nretry-after:" in head else 0
        source = 0
        if status == 200:
            self.last_ok = now
            at = body.find(b'"source":"')
            if at >= 0:
                source = SOURCES.get(body[at + 10 : body.find(b'"', at + 10)], 4)
            if b'"accepted":1' in body:
                flags |= ACCEPTED
        elif any(marker in body for marker in self.leak_markers):
            flags |= LEAKS_ADDRESS
        tag, due, sent = request
        self.replies.add(tag, due, sent, now, status, flags, source)
        if b"\r\nconnection: close" in head:
            connection.transport.close()
        else:
            self._ready(connection)

    def lost(self, connection: _Connection) -> None:
        self._open -= 1
        self._in_flight.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        if connection.request is not None:
            tag, due, sent = connection.request
            connection.request = None
            self.replies.add(tag, due, sent, time.perf_counter(), NO_ANSWER)
        if self._backlog and self._open < self.max_connections:
            self._open += 1
            self._loop.create_task(self._connect())


def run_async(coroutine):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# ---------------------------------------------------------------- requests and helpers
def recommend_body(user: int) -> bytes:
    return http_post("/recommend", b'{"user_id":"%d","n":10}' % user)


def events_body(events: list[tuple[str, int, float, str]]) -> bytes:
    """(user, item, timestamp, event_id) each."""
    parts = [
        b'{"user_id":"%s","item_id":"%d","timestamp":%r,"event_id":"%s"}'
        % (user.encode(), item, timestamp, event_id.encode())
        for user, item, timestamp, event_id in events
    ]
    return http_post("/events", b'{"events":[' + b",".join(parts) + b"]}")


def load_histories(port: int, users: int, per_user: int) -> None:
    """`per_user` events for users 1..users, 100 events a request (closed loop, c=8)."""
    rng = np.random.default_rng(1)
    now = time.time() - 3600
    events = [
        (str(user), int(rng.integers(1, NUM_ITEMS + 1)), now + t, f"h{user}-{t}")
        for user in range(1, users + 1)
        for t in range(per_user)
    ]
    batches = iter([events_body(events[k : k + 100]) for k in range(0, len(events), 100)])
    result = run_load(port, 8, lambda: next(batches, None), 0.0, None)
    if result["errors"]:
        raise RuntimeError(f"loading histories: {result['errors']} requests failed")


def percentiles_ms(seconds: np.ndarray) -> dict:
    if len(seconds) == 0:
        return {"n": 0}
    ms = seconds * 1000
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
    }


def counts(values: np.ndarray, names: dict | None = None) -> dict:
    keys, numbers = np.unique(values, return_counts=True)
    return {
        str(names.get(int(k), k) if names else int(k)): int(n)
        for k, n in zip(keys, numbers, strict=True)
    }


def get(url: str, timeout_s: float = 10) -> tuple[int | None, float]:
    """(status, seconds) of GET url; status None when nothing answered in time."""
    return _timed(urllib.request.Request(url), timeout_s)


def post(url: str, body: bytes, timeout_s: float = 10) -> tuple[int | None, float]:
    """(status, seconds) of a JSON POST; status None when nothing answered in time."""
    return _timed(
        urllib.request.Request(url, body, {"Content-Type": "application/json"}), timeout_s
    )


def _timed(request: urllib.request.Request, timeout_s: float) -> tuple[int | None, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            status = reply.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = None
    return status, time.perf_counter() - started


def service_metrics(url: str) -> dict:
    """What the service counted: requests shed, popularity answers, its own latency of
    /recommend (from the handler's start: time in socket buffers is not in it)."""
    wanted = (
        "cosrec_requests_shed_total",
        "cosrec_popularity_fallbacks_total",
        "cosrec_http_request_duration_seconds_bucket",
        "cosrec_http_requests_total",
    )
    return {
        f"{sample.name}{json.dumps(sample.labels, sort_keys=True)}": sample.value
        for sample in metric_samples(url)
        if sample.name in wanted and sample.labels.get("route", "/recommend") == "/recommend"
    }


def start_service(bundle: Path, redis_url: str, work: Path, name: str, **settings: str):
    return ServiceProcess.start(
        bundle,
        redis_url,
        log_path=work / f"{name}.log",
        ready_route="/readyz",
        reload_poll_s="0",
        **settings,
    )


# ---------------------------------------------------------------- hang
def hang_section(bundle: Path, work: Path, args) -> dict:
    """Mixed open-loop load; Redis SIGSTOPped for hang_s, then SIGCONTed."""
    pre_s, hang_s, post_s = (3.0, 4.0, 4.0) if args.quick else (5.0, 10.0, 10.0)
    rate = 200.0  # requests per second, half /recommend (users with a history), half /events
    server = RedisProcess(free_port(), work / "redis-hang").start()
    service = start_service(bundle, server.url, work, "hang")
    try:
        load_histories(service.port, NUM_USERS, HISTORY_EVENTS)
        pid = service.process.pid
        rng = np.random.default_rng(2)
        now = time.time()

        def make(k: int) -> tuple[int, bytes]:
            user = int(rng.integers(1, NUM_USERS + 1))
            if k % 2:
                return 0, recommend_body(user)
            item = int(rng.integers(1, NUM_ITEMS + 1))
            return 1, events_body([(str(user), item, now + k * 1e-3, f"hang-{k}")])

        markers = (b"127.0.0.1", str(server.port).encode())
        load = OpenLoop(service.port, make, leak_markers=markers)
        marks: dict[str, float] = {}
        probes: dict = {}

        def control() -> None:
            time.sleep(pre_s)
            marks["stop"] = time.perf_counter()
            server.process.send_signal(signal.SIGSTOP)
            time.sleep(1.0)
            probes["healthz_in_hang"] = get(service.url + "/healthz")
            probes["readyz_in_hang"] = get(service.url + "/readyz")
            time.sleep(max(0.0, marks["stop"] + hang_s - time.perf_counter()))
            marks["cont"] = time.perf_counter()
            server.process.send_signal(signal.SIGCONT)
            while get(service.url + "/readyz", 2)[0] != 200:
                time.sleep(0.01)
            marks["ready"] = time.perf_counter()
            time.sleep(post_s)
            load.stop.set()

        controller = threading.Thread(target=control, daemon=True)
        controller.start()
        run = run_async(load.run(rate, None))
        controller.join()
        alive = service.process.poll() is None and service.process.pid == pid
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        service.stop()
        server.stop()

    r = load.replies.arrays()
    stop, cont = marks["stop"], marks["cont"]
    latency = r["answered"] - r["sent"]
    recommend, events = r["tag"] == 0, r["tag"] == 1
    # sent while Redis was stopped, early enough that the answer was due before SIGCONT
    in_hang_rec = recommend & (r["sent"] > stop) & (r["sent"] < cont - RECOMMEND_DEADLINE_S - 0.05)
    in_hang_ev = events & (r["sent"] > stop) & (r["sent"] < cont - EVENTS_DEADLINE_S - 0.05)
    healthy = (r["status"] == 200) & np.where(
        recommend, r["source"] == 1, (r["flags"] & ACCEPTED) > 0
    )
    after = r["sent"] > cont
    unhealthy_after = np.flatnonzero(after & ~healthy)
    # full recovery: from SIGCONT to the send time of the first request from which on every
    # one was served normally (a model recommendation, an accepted event)
    if unhealthy_after.size:
        later = after & (r["sent"] > r["sent"][unhealthy_after].max())
        full = float(r["sent"][later].min() - cont) if later.any() else None
    else:
        full = 0.0
    first_model = r["answered"][after & recommend & (r["source"] == 1)]
    first_event = r["answered"][after & events & ((r["flags"] & ACCEPTED) > 0)]
    rec_lat = latency[in_hang_rec]
    ev_lat = latency[in_hang_ev]
    rec_from_due = (r["answered"] - r["due"])[in_hang_rec]
    result = {
        "settings": {
            "rate_rps": rate,
            "mix": "half /recommend (users with 10 events), half one-event /events",
            "hang_s": hang_s,
            "recommend_deadline_ms": RECOMMEND_DEADLINE_S * 1000,
            "events_deadline_ms": EVENTS_DEADLINE_S * 1000,
            "workers": 1,
        },
        "load": run,
        "recommend_in_hang": {
            "statuses": counts(r["status"][in_hang_rec]),
            "sources": counts(r["source"][in_hang_rec], SOURCE_NAMES),
            "latency_from_send": percentiles_ms(rec_lat),
            "latency_from_due": percentiles_ms(rec_from_due),
        },
        "events_in_hang": {
            "statuses": counts(r["status"][in_hang_ev]),
            "with_retry_after": int(((r["flags"][in_hang_ev] & RETRY_AFTER) > 0).sum()),
            "revealing_redis_address": int(((r["flags"][in_hang_ev] & LEAKS_ADDRESS) > 0).sum()),
            "latency_from_send": percentiles_ms(ev_lat),
        },
        "probes_in_hang": {
            name: {"status": status, "seconds": round(seconds, 3)}
            for name, (status, seconds) in probes.items()
        },
        "recovery": {
            "readyz_200_after_sigcont_s": round(marks["ready"] - cont, 3),
            "first_model_recommendation_after_sigcont_s": round(float(first_model.min() - cont), 3)
            if first_model.size
            else None,
            "first_accepted_event_after_sigcont_s": round(float(first_event.min() - cont), 3)
            if first_event.size
            else None,
            "full_recovery_after_sigcont_s": None if full is None else round(full, 3),
            "requests_sent_after_sigcont_not_served_normally": int(unhealthy_after.size),
            "those_by_route_status_source": dict(
                Counter(
                    f"{'recommend' if r['tag'][i] == 0 else 'events'} {r['status'][i]} "
                    f"{SOURCE_NAMES[int(r['source'][i])]}"
                    for i in unhealthy_after
                )
            ),
            "those_sent_after_sigcont_s": percentiles_ms(r["sent"][unhealthy_after] - cont),
            "those_latency": percentiles_ms(latency[unhealthy_after]),
            "service_restarted": not alive,
        },
        "statuses_all": counts(r["status"]),
    }
    rec_ok = (
        rec_lat.size > 0
        and set(counts(r["status"][in_hang_rec])) == {"200"}
        and set(counts(r["source"][in_hang_rec], SOURCE_NAMES)) == {"popularity_fallback"}
    )
    result["targets"] = {
        "recommend p99 within deadline + 50 ms, all fallback": bool(
            rec_ok and np.percentile(rec_lat, 99) <= RECOMMEND_DEADLINE_S + 0.05
        ),
        "events all 503 with Retry-After, no address, p99 within deadline + 50 ms": bool(
            ev_lat.size > 0
            and set(counts(r["status"][in_hang_ev])) == {"503"}
            and result["events_in_hang"]["with_retry_after"] == ev_lat.size
            and result["events_in_hang"]["revealing_redis_address"] == 0
            and np.percentile(ev_lat, 99) <= EVENTS_DEADLINE_S + 0.05
        ),
        "full recovery, no restart": bool(alive and full is not None),
    }
    return result


# ---------------------------------------------------------------- overload
def overload_section(bundle: Path, work: Path, args) -> dict:
    """Capacity of /recommend (closed loop, c=64); the rate at which the service can shed
    (the same with a queue of 1: nearly every request is answered 503); then open loops at
    `args.overload_factors` x capacity (10x: the issue's figure)."""
    duration_s = 10.0 if args.quick else 60.0
    server = RedisProcess(free_port(), work / "redis-overload").start()
    try:
        runs = []
        capacity = None
        for factor in args.overload_factors:
            service = start_service(bundle, server.url, work, f"overload-{factor:g}")
            try:
                if capacity is None:
                    load_histories(service.port, NUM_USERS, HISTORY_EVENTS)
                measured = run_load(service.port, 64, recommend_requests("/recommend", 2), 1.0, 5.0)
                capacity = capacity or measured  # the first service's: one rate for every run
                rate = factor * capacity["rps"]
                seconds = duration_s if factor == max(args.overload_factors) else duration_s / 2
                result = overload_run(service, rate, seconds)
                result["factor"] = factor
                result["capacity_c64_this_service"] = measured
                runs.append(result)
            finally:
                service.stop()
            p99 = result["answered_200"]["latency_from_due"].get("p99_ms")
            print(f"  {factor:g}x: {result['statuses']}, 200 p99 {p99} ms", flush=True)
        service = start_service(bundle, server.url, work, "overload-shed", max_queued_requests="1")
        try:
            shedding = run_load(service.port, 64, recommend_requests("/recommend", 2), 1.0, 5.0)
        finally:
            service.stop()
        closed_loop = None
        if shutil.which("wrk"):
            service = start_service(bundle, server.url, work, "overload-wrk")
            try:
                closed_loop = wrk_check(service, work, 640, 5.0 if args.quick else 30.0)
            finally:
                service.stop()
    finally:
        server.stop()
    top = runs[-1]
    answered = top["answered_200"]["latency_from_due"]
    return {
        "settings": {
            "route": "/recommend (users with 10 events each), n=10",
            "workers": 1,
            "recommend_deadline_ms": RECOMMEND_DEADLINE_S * 1000,
            "max_queued_requests": 512,
            "client_timeout_s": OVERLOAD_CLIENT_TIMEOUT_S,
            "generator_max_connections": OVERLOAD_MAX_CONNECTIONS,
            "latency": "from each request's due time (open loop), and from its actual send",
        },
        "capacity_c64": capacity,
        "shedding_c64_with_max_queued_requests_1": shedding,
        "runs": runs,
        "wrk_closed_loop_c640": closed_loop,
        "targets": {
            f"{top['factor']:g}x: answered p99 within twice the deadline": bool(
                answered.get("n") and answered["p99_ms"] <= 2000 * RECOMMEND_DEADLINE_S
            ),
            f"{top['factor']:g}x: the rest 503 with Retry-After": bool(
                top["shed_503"]["with_retry_after"] == top["shed_503"]["n"]
            ),
            f"{top['factor']:g}x: no other status": top["other_statuses"] == 0,
            f"{top['factor']:g}x: RSS flat (under 10% growth)": bool(
                top["rss_end_mb"] < 1.1 * top["rss_start_mb"]
            ),
            f"{top['factor']:g}x: serves afterwards": top["serves_afterwards"],
        },
    }


# wrk's script: POST /recommend for the bundle's users; counts statuses and Retry-After.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, "/recommend", nil, '{"user_id":"' .. (n % 6040 + 1) .. '","n":10}')
end
statuses = {}
retry_after = 0
model = 0
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if headers["retry-after"] or headers["Retry-After"] then retry_after = retry_after + 1 end
  if status == 200 and string.find(body, '"source":"model"', 1, true) then model = model + 1 end
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local parts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      table.insert(parts, string.format('"%d": %d', status, count))
    end
    table.insert(parts, string.format('"retry_after": %d', thread:get("retry_after")))
    table.insert(parts, string.format('"200 with source model": %d', thread:get("model")))
  end
  io.write(string.format(
    'RESULT {"requests": %d, "timeouts": %d, "read_errors": %d, "p50_ms": %.1f, '
    .. '"p99_ms": %.1f, "max_ms": %.1f, "by_status": {%s}}\\n',
    summary.requests, summary.errors.timeout, summary.errors.read,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    table.concat(parts, ", ")))
end
"""


def wrk_check(service: ServiceProcess, work: Path, connections: int, duration_s: float) -> dict:
    """A second opinion from a generator in C (wrk: closed loop, each of `connections`
    clients sends its next request on an answer, 2 s timeout): it costs this machine's CPUs
    far less than the Python open loop, so the service gets more of them."""
    script = work / "overload.lua"
    script.write_text(WRK_SCRIPT)
    rss_start = tree_rss_mb(service.process.pid)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "2s"]
    output = subprocess.run(
        [*command, "-s", str(script), service.url], capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["command"] = shlex.join([*command, "-s", "<WRK_SCRIPT of bench/faults.py>", "URL"])
    result["rps"] = round(result["requests"] / duration_s, 1)
    result["latency"] = "of every answer (200 and 503), from its send (closed loop)"
    result["rss_start_mb"] = round(rss_start, 1)
    result["rss_end_mb"] = round(tree_rss_mb(service.process.pid), 1)
    result["service_metrics_after"] = {
        k: v for k, v in service_metrics(service.url).items() if "_bucket" not in k
    }
    return result


def overload_run(service: ServiceProcess, rate: float, duration_s: float) -> dict:
    rss_start = tree_rss_mb(service.process.pid)
    rng = np.random.default_rng(3)
    pool = [recommend_body(int(u)) for u in rng.integers(1, NUM_USERS + 1, size=4096)]
    load = OpenLoop(
        service.port,
        lambda k: (0, pool[k % len(pool)]),
        max_connections=OVERLOAD_MAX_CONNECTIONS,
        client_timeout_s=OVERLOAD_CLIENT_TIMEOUT_S,
    )
    run = run_async(load.run(rate, duration_s))
    rss_end = tree_rss_mb(service.process.pid)
    # from the end of the load: how long until a lone /recommend is answered 200 in time
    drained = time.perf_counter()
    while post(service.url + "/recommend", b'{"user_id":"1","n":10}', 2)[0] != 200:
        time.sleep(0.05)
    serving_again_s = time.perf_counter() - drained
    after = run_load(service.port, 4, recommend_requests("/recommend", 4), 0.5, 3.0)
    rss_recovered = tree_rss_mb(service.process.pid)
    metrics = service_metrics(service.url)
    alive = service.process.poll() is None
    r = load.replies.arrays()
    ok, shed = r["status"] == 200, r["status"] == 503
    other = ~(ok | shed)
    return {
        "target_rps": round(rate, 1),
        "duration_s": duration_s,
        "load": run,
        "statuses": counts(r["status"], STATUS_NAMES),
        "answered_200": {
            "sources": counts(r["source"][ok], SOURCE_NAMES),
            "latency_from_due": percentiles_ms((r["answered"] - r["due"])[ok]),
            "latency_from_send": percentiles_ms((r["answered"] - r["sent"])[ok]),
        },
        "shed_503": {
            "n": int(shed.sum()),
            "with_retry_after": int(((r["flags"][shed] & RETRY_AFTER) > 0).sum()),
            "latency_from_due": percentiles_ms((r["answered"] - r["due"])[shed]),
            "latency_from_send": percentiles_ms((r["answered"] - r["sent"])[shed]),
        },
        "other_statuses": int(other.sum()),
        "generator_lag": percentiles_ms((r["sent"] - r["due"])[r["status"] != NOT_SENT]),
        "service_metrics_after": metrics,
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_after_recovery_mb": round(rss_recovered, 1),
        "answering_again_after_the_load_s": round(serving_again_s, 2),
        "after_the_load_c4_3s": after,
        "serves_afterwards": bool(alive and after["requests"] > 0 and after["errors"] == 0),
    }


# ---------------------------------------------------------------- failover
# A TCP relay on loopback, a process of its own: every chunk is held `delay` seconds before it
# is passed on, both ways. argv: listen port, target port, delay in seconds.
RELAY = """
import asyncio, sys
listen, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

async def pipe(reader, writer):
    loop = asyncio.get_running_loop()
    held = asyncio.Queue()

    async def deliver():
        while (item := await held.get()) is not None:
            await asyncio.sleep(max(0.0, item[0] - loop.time()))
            writer.write(item[1])
            await writer.drain()
        writer.close()

    task = asyncio.create_task(deliver())
    while data := await reader.read(1 << 16):
        held.put_nowait((loop.time() + delay, data))
    held.put_nowait(None)
    await task

async def accept(reader, writer):
    target_reader, target_writer = await asyncio.open_connection("127.0.0.1", target)
    await asyncio.gather(pipe(reader, target_writer), pipe(target_reader, writer))

async def main():
    server = await asyncio.start_server(accept, "127.0.0.1", listen)
    await server.serve_forever()

asyncio.run(main())
"""


class DelayLink:
    """The network between a primary's host and its replica: a relay process that holds the
    replication stream (and the replica's acknowledgements) `delay_s` each way. Killed with
    the primary, it takes what it holds with it, as a host crash takes its unsent buffers."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-c", RELAY, str(self.port), str(target_port), repr(delay_s)]
        )

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError:
                return False
            return True

        wait_until(listening, 10, "the delay link did not start")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def crash_host(node: RedisProcess, link: DelayLink | None) -> None:
    """SIGKILL the node and, right after it (no wait between), the link from its host."""
    assert node.process is not None
    node.process.send_signal(signal.SIGKILL)
    if link is not None:
        link.process.send_signal(signal.SIGKILL)
    node.process.wait(10)
    node.process = None
    if link is not None:
        link.kill()


def failover_run(bundle: Path, work: Path, acks: int, delay_ms: float, rate: float, run: int):
    """One failover under steady one-event /events load; what was acknowledged and lost."""
    directory = work / f"failover-{acks}-{delay_ms}-{run}"
    # failover-timeout long: Sentinel would otherwise "fix" a replica that replicates through
    # the delay link (its master address differs) a few seconds in
    group = ReplicatedRedis.start(directory, replicas=1, failover_timeout_ms=60_000)
    link = None
    service = None
    try:
        old = group.primary()
        if delay_ms > 0:
            link = DelayLink(old.port, delay_ms / 1000)
            replica = next(node for node in group.nodes if node is not old)
            client = replica.client()
            client.replicaof("127.0.0.1", link.port)
            client.close()
            wait_until(group.settled, 30, "the replica did not sync through the delay link")
        service = start_service(
            bundle,
            "redis://127.0.0.1:1/0",
            work,
            f"failover-{acks}-{delay_ms}-{run}",
            redis_sentinels=group.sentinel_addresses,
            replica_acks=str(acks),
        )
        rng = np.random.default_rng(run)
        start = round(time.time() - 3600)  # an hour ago, a millisecond apart: unique rows
        sent_events: dict[int, tuple[str, str, float]] = {}

        def make(k: int) -> tuple[int, bytes]:
            user, item = str(int(rng.integers(1, 1001))), int(rng.integers(1, NUM_ITEMS + 1))
            event = (user, item, start + k / 1000)
            sent_events[k] = (event[0], str(event[1]), float(event[2]))
            return k, events_body([(*event, f"f{run}-{k}")])

        load = OpenLoop(service.port, make)
        marks: dict[str, float] = {}

        def control() -> None:
            try:
                fail_over()
            finally:
                load.stop.set()

        def fail_over() -> None:
            time.sleep(3.0)
            marks["kill"] = time.perf_counter()
            crash_host(old, link)
            new = group.wait_failover(old.port, 30)
            marks["promoted"] = time.perf_counter()
            marks["new_port"] = new.port
            if acks:  # no replica left to acknowledge: the old primary's host rejoins
                group.rejoin(old)
                marks["rejoined"] = time.perf_counter()
            try:
                wait_until(lambda: load.last_ok > marks["promoted"], 20, "no 200 after it")
            except TimeoutError:
                return  # reported as first_200_after_kill_s None
            marks["first_ok"] = load.last_ok
            time.sleep(2.0)

        controller = threading.Thread(target=control, daemon=True)
        controller.start()
        run_result = run_async(load.run(rate, None))
        controller.join()
        new = next(node for node in group.nodes if node.port == marks["new_port"])
        client = new.client()
        try:
            logged = set(read_event_log(client))
        finally:
            client.close()
    finally:
        if service is not None:
            service.stop()
        if link is not None:
            link.kill()
        group.stop()
    r = load.replies.arrays()
    acknowledged = {int(k) for k in r["tag"][(r["flags"] & ACCEPTED) > 0]}
    lost = sorted(k for k in acknowledged if sent_events[k] not in logged)
    acked_before_kill = (r["answered"] < marks["kill"]) & ((r["flags"] & ACCEPTED) > 0)
    return {
        "replica_acks": acks,
        "link_delay_ms": delay_ms,
        "events_sent": len(r["tag"]),
        "acknowledged": len(acknowledged),
        "acknowledged_before_the_kill": int(acked_before_kill.sum()),
        "lost": len(lost),
        "lost_answered_within_ms_before_kill": [
            round(float((marks["kill"] - r["answered"][r["tag"] == k][0]) * 1000), 2)
            for k in lost[:20]
        ],
        "statuses": counts(r["status"]),
        "promoted_after_s": round(marks["promoted"] - marks["kill"], 2),
        "first_200_after_kill_s": round(marks["first_ok"] - marks["kill"], 2)
        if "first_ok" in marks
        else None,
        "statuses_by_second_after_kill": {
            f"{second:g}": counts(r["status"][np.floor(r["due"] - marks["kill"]) == second])
            for second in np.unique(np.floor(r["due"] - marks["kill"]))
        },
        "old_primary_rejoined_after_s": round(marks["rejoined"] - marks["kill"], 2)
        if "rejoined" in marks
        else None,
        "events_latency_before_kill": percentiles_ms(
            (r["answered"] - r["sent"])[r["answered"] < marks["kill"]]
        ),
        "load": run_result,
    }


def failover_section(bundle: Path, work: Path, args) -> dict:
    repeats = 1 if args.quick else args.failover_repeats
    rate = 300.0
    runs = []
    for delay_ms in args.link_delays_ms:
        for acks in (0, 1):
            for run in range(repeats):
                result = failover_run(bundle, work, acks, delay_ms, rate, run)
                print(f"  failover acks={acks} link {delay_ms} ms run {run}: "
                      f"{result['lost']} of {result['acknowledged']} acknowledged lost, "
                      f"first 200 {result['first_200_after_kill_s']} s after the kill",
                      flush=True)  # fmt: skip
                runs.append(result)
    summary = {}
    for delay_ms in args.link_delays_ms:
        for acks in (0, 1):
            mine = [x for x in runs if x["replica_acks"] == acks and x["link_delay_ms"] == delay_ms]
            summary[f"replica_acks={acks}, link {delay_ms:g} ms"] = {
                "runs": len(mine),
                "acknowledged": sum(x["acknowledged"] for x in mine),
                "lost": sum(x["lost"] for x in mine),
                "first_200_after_kill_s": [x["first_200_after_kill_s"] for x in mine],
            }
    return {
        "settings": {
            "topology": "1 primary, 1 replica, 3 Sentinels (quorum 2), loopback",
            "sentinel_down_after_ms": 1000,
            "load": f"open loop, {rate:g} one-event /events requests per second, unique event_ids",
            "kill": "SIGKILL of the primary 3 s into the load (and of the delay link with it)",
            "link": "0 ms: the replica replicates straight from the primary; otherwise through "
            "a relay process holding each chunk that long each way, killed with the primary: "
            "what it holds is lost, as a host crash loses its unsent buffers",
            "expected loss without replica acks": "about rate x replication lag: events "
            "acknowledged in the last lag before the crash",
            "with replica_acks=1": "the old primary is restarted as a replica of the new one "
            "after the promotion (a promoted primary without replicas confirms nothing)",
        },
        "summary": summary,
        "runs": runs,
        "targets": {
            "replica_acks=1: 0 lost": all(x["lost"] == 0 for x in runs if x["replica_acks"] == 1)
        },
    }


# ---------------------------------------------------------------- retention
def user_events(user: str, count: int, now: float) -> list[tuple[str, int, float, str]]:
    rng = np.random.default_rng(abs(hash(user)) % (1 << 32))
    items = rng.integers(1, NUM_ITEMS + 1, size=count)
    return [(user, int(item), now - count + t, str(uuid.uuid4())) for t, item in enumerate(items)]


def write_users(port: int, users: list[str], per_user: int) -> None:
    """Every user's `per_user` events; whole users per request, up to 1000 events each."""
    now = time.time()
    per_request = max(1, 1000 // per_user)
    requests = iter(
        [
            events_body(
                [e for u in users[k : k + per_request] for e in user_events(u, per_user, now)]
            )
            for k in range(0, len(users), per_request)
        ]
    )
    result = run_load(port, 4, lambda: next(requests, None), 0.0, None)
    if result["errors"]:
        raise RuntimeError(f"writing users: {result['errors']} requests failed")


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def bytes_per_user(bundle: Path, work: Path, args) -> dict:
    """used_memory delta per user, and MEMORY USAGE per key kind, for users of N events."""
    plan = [(1, 400), (10, 400), (50, 400), (100, 200), (200, 100), (500, 100)]
    if args.quick:
        plan = [(1, 100), (10, 100), (50, 100), (200, 40)]
    server = RedisProcess(free_port(), work / "redis-bytes").start()
    service = start_service(bundle, server.url, work, "bytes")
    client = server.client()
    rows = []
    try:
        # one-time costs first (the script cache, connections, the first table sizes)
        write_users(service.port, [f"warm-{n:06d}" for n in range(200)], 1)
        for per_user, users in plan:
            names = [f"user-{per_user}-{n:06d}" for n in range(users)]
            before = used_memory(client)
            write_users(service.port, names, per_user)
            after = used_memory(client)
            sample = names[:: max(1, users // 50)]
            kinds = dict.fromkeys(USER_KEY_KINDS, 0)
            for name in sample:
                for kind, key in zip(USER_KEY_KINDS, user_keys("cosrec", name).all(), strict=True):
                    kinds[kind] += client.memory_usage(key, samples=0) or 0
            rows.append(
                {
                    "events_per_user": per_user,
                    "users": users,
                    "used_memory_delta_per_user": round((after - before) / users),
                    "memory_usage_per_user_by_key": {
                        kind: round(total / len(sample)) for kind, total in kinds.items()
                    },
                    "memory_usage_per_user": round(sum(kinds.values()) / len(sample)),
                }
            )
            print(f"  {per_user} events a user: {rows[-1]['used_memory_delta_per_user']} B a user",
                  flush=True)  # fmt: skip
    finally:
        client.close()
        service.stop()
        server.stop()
    compact = [row for row in rows if row["events_per_user"] <= 100]
    slope, intercept = np.polyfit(
        [row["events_per_user"] for row in compact],
        [row["used_memory_delta_per_user"] for row in compact],
        1,
    )
    large = [row for row in rows if row["events_per_user"] >= 200]
    large_slope = None
    if len(large) >= 2:
        a, b = large[0], large[-1]
        large_slope = (b["used_memory_delta_per_user"] - a["used_memory_delta_per_user"]) / (
            b["events_per_user"] - a["events_per_user"]
        )
    return {
        "rows": rows,
        "fit_up_to_100_events": {
            "bytes_per_user": round(float(intercept)),
            "bytes_per_event": round(float(slope)),
            "formula": "used_memory per user = bytes_per_user + bytes_per_event x events kept "
            "(least squares over the rows with <= 100 events a user)",
        },
        "bytes_per_event_beyond_128": None if large_slope is None else round(large_slope),
        "ids": "user ids of 16 characters, item ids of 1-4 digits, event ids UUIDs (36 "
        "characters), timestamps as floats",
        "note": "Redis keeps a sorted set or hash of up to 128 entries in its compact "
        "listpack encoding; past 128 events a user, seq/ids/idc/items change encoding and an "
        "event costs more (bytes_per_event_beyond_128)",
    }


def retention_soak(bundle: Path, work: Path, args, per_user_bytes: dict) -> dict:
    """New users at a steady rate, each sending its events in one request; every user's keys
    expire COSREC_USER_TTL_S after its write. Memory should level off at
    base + rate x TTL x bytes per user."""
    ttl_s = 20.0 if args.quick else 60.0
    duration_s = 60.0 if args.quick else 180.0
    user_rate = 40.0
    per_user = 10
    server = RedisProcess(free_port(), work / "redis-soak").start()
    service = start_service(
        bundle, server.url, work, "soak", user_ttl_s=str(ttl_s), redis_memory_poll_s="0"
    )
    client = server.client()
    samples = []
    try:
        base = used_memory(client)

        def make(k: int) -> tuple[int, bytes]:
            return k, events_body(user_events(f"soak-{k:010d}", per_user, time.time()))

        load = OpenLoop(service.port, make)
        started = time.perf_counter()

        def sample() -> None:
            while not load.stop.is_set():
                info = client.info()
                keys = client.dbsize()
                samples.append(
                    {
                        "t_s": round(time.perf_counter() - started, 1),
                        "used_memory": int(info["used_memory"]),
                        "keys": int(keys),
                        "expired_keys": int(info["expired_keys"]),
                        "expired_stale_perc": float(info.get("expired_stale_perc", 0.0)),
                    }
                )
                load.stop.wait(2.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        run = run_async(load.run(user_rate, duration_s))
        load.stop.set()
        sampler.join(10)
        rss = tree_rss_mb(service.process.pid)
    finally:
        client.close()
        service.stop()
        server.stop()
    r = load.replies.arrays()
    measured = [row for row in per_user_bytes["rows"] if row["events_per_user"] == per_user]
    bytes_user = (
        measured[0]["used_memory_delta_per_user"]
        if measured
        else per_user_bytes["fit_up_to_100_events"]["bytes_per_user"]
        + per_user * per_user_bytes["fit_up_to_100_events"]["bytes_per_event"]
    )
    live_users = user_rate * ttl_s
    predicted = base + live_users * bytes_user
    # Redis reclaims expired keys by sampling; by default (active-expire-effort 1) it lets up
    # to 10% of the keys with a TTL be expired but not yet freed
    with_stale = base + live_users * bytes_user / (1 - REDIS_STALE_EXPIRED)
    plateau = [s for s in samples if s["t_s"] >= 2 * ttl_s]
    plateau_mean = float(np.mean([s["used_memory"] for s in plateau])) if plateau else None
    keys_per_user = len(USER_KEY_KINDS)
    live_measured = (
        float(np.mean([s["keys"] for s in plateau])) / keys_per_user if plateau else None
    )
    filling = [s for s in samples if s["t_s"] <= 0.8 * ttl_s]

    def slope(rows: list[dict]) -> float | None:
        if len(rows) < 3:
            return None
        return float(np.polyfit([r["t_s"] for r in rows], [r["used_memory"] for r in rows], 1)[0])

    return {
        "settings": {
            "user_ttl_s": ttl_s,
            "duration_s": duration_s,
            "new_users_per_s": user_rate,
            "events_per_user": per_user,
            "how": "each new user sends its events in one /events request; open loop",
        },
        "load": run,
        "statuses": counts(r["status"]),
        "base_used_memory": base,
        "bytes_per_user_used": bytes_user,
        "live_users_predicted": live_users,
        "predicted_plateau_bytes": round(predicted),
        "measured_plateau_bytes": None if plateau_mean is None else round(plateau_mean),
        "measured_over_predicted": None
        if plateau_mean is None
        else round(plateau_mean / predicted, 3),
        "predicted_with_redis_stale_expired_keys_bytes": round(with_stale),
        "measured_over_predicted_with_stale": None
        if plateau_mean is None
        else round(plateau_mean / with_stale, 3),
        "plateau_window_s": [2 * ttl_s, duration_s],
        "live_users_measured_mean": None if live_measured is None else round(live_measured),
        "predicted_from_measured_live_users_bytes": None
        if live_measured is None
        else round(base + live_measured * bytes_user),
        "growth_bytes_per_s_while_filling": slope(filling),
        "growth_bytes_per_s_on_the_plateau": slope(plateau),
        "note": "keys outlive their TTL until Redis's active expiry reclaims them (sampled, "
        "hz 10): the live users measured (keys / 6) exceed rate x TTL by that lag",
        "formula": "used_memory = base + new_users_per_s x COSREC_USER_TTL_S x "
        "(bytes_per_user + bytes_per_event x events per user) / (1 - 0.10); the 0.10: expired "
        "keys Redis has not reclaimed yet (up to 10% of the keys with a TTL, by default)",
        "service_rss_end_mb": round(rss, 1),
        "samples": samples,
    }


def retention_section(bundle: Path, work: Path, args) -> dict:
    per_user = bytes_per_user(bundle, work, args)
    soak = retention_soak(bundle, work, args, per_user)
    result = {"bytes_per_user": per_user, "soak": soak}
    ratio = soak["measured_over_predicted_with_stale"]
    growth = soak["growth_bytes_per_s_on_the_plateau"]
    result["targets"] = {
        "levels off (plateau growth under 5% of the filling rate)": bool(
            growth is not None and abs(growth) < 0.05 * soak["growth_bytes_per_s_while_filling"]
        ),
        "plateau within 15% of the formula": bool(ratio and 0.85 <= ratio <= 1.15),
    }
    return result


# ---------------------------------------------------------------- the run
SECTIONS = {
    "hang": hang_section,
    "overload": overload_section,
    "failover": failover_section,
    "retention": retention_section,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run of every section")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--bundle", type=Path, help="serve this bundle (default: ML-1M-sized)")
    parser.add_argument("--failover-repeats", type=int, default=2)
    parser.add_argument(
        "--overload-factors",
        type=float,
        nargs="+",
        default=[0.8, 2.0, 10.0],
        help="open-loop rates as multiples of the capacity (the last runs the full duration)",
    )
    parser.add_argument(
        "--link-delays-ms",
        type=float,
        nargs="+",
        default=[0.0, 10.0],
        help="one-way delay of the primary-replica link in the failover runs (0: direct)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "bench/faults.py", *(sys.argv[1:] if argv is None else argv)])
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    with tempfile.TemporaryDirectory(prefix="cosrec-faults-") as scratch:
        work = Path(scratch)
        if args.bundle is None:
            from serve import export_bundle_ml1m_size  # imports torch

            print("exporting the ML-1M-sized bundle ...", flush=True)
            bundle = export_bundle_ml1m_size(work / "bundle")
        else:
            bundle = args.bundle
        for name in args.sections:
            print(f"{name} ...", flush=True)
            started = time.perf_counter()
            section = SECTIONS[name](bundle, work, args)
            section["seconds"] = round(time.perf_counter() - started, 1)
            section["command"] = command
            section["machine"] = (
                f"{describe_cpu()}; load average {os.getloadavg()[0]:.1f} at the section's end"
            )
            section["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            results[name] = section
            print(json.dumps({k: v for k, v in section.items() if k != "samples"}, indent=1)[:4000])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    failed = [
        f"{name}: {target}"
        for name in args.sections
        for target, reached in results[name].get("targets", {}).items()
        if not reached
    ]
    for line in failed:
        print(f"target MISSED: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
