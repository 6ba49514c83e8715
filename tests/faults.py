"""Helpers of the reliability suite: a 3-node Redis Cluster, a mixed load that records every
answer, and what the event log holds. Real processes on loopback only (cosrec.processes)."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from contract.event_log import read_event_log
from cosrec.processes import DurableRedis, redis_cli_binary, wait_until

LoggedRow = tuple[str, str, float]  # (user_id, item_id, timestamp), as the event log reads back


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """Ports p with p and its cluster bus port p + 10000 both free (below the ephemeral range,
    where free_port's answers would overflow past 65535)."""
    ports: list[int] = []
    for port in random.Random().sample(range(20000, 29000), 2000):
        if _bindable(port) and _bindable(port + 10000):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError("no free port pairs for a Redis Cluster")


@dataclass
class RedisClusterProcesses:
    """A Redis Cluster of primaries only, each node durable like DurableRedis."""

    nodes: list[DurableRedis]

    @classmethod
    def create(cls, directory: Path, size: int = 3) -> RedisClusterProcesses:
        nodes = []
        for port in free_cluster_ports(size):
            node_dir = directory / str(port)
            node_dir.mkdir()
            cluster_args = (
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
            nodes.append(DurableRedis(port, node_dir, cluster_args))
        cluster = cls(nodes)
        for node in nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [
                redis_cli_binary(),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster.wait_healthy(30)
        return cluster

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def healthy(self) -> bool:
        for node in self.nodes:
            try:
                info = node.client().cluster("info")
            except redis.RedisError:
                return False
            state = info.get("cluster_state") if isinstance(info, dict) else None
            if state is None:  # redis-py returns the raw text on some versions
                state = "ok" if b"cluster_state:ok" in info else "fail"
            if state != "ok":
                return False
        return True

    def wait_healthy(self, timeout_s: float) -> None:
        wait_until(self.healthy, timeout_s, "the Redis Cluster did not report cluster_state ok")

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def node_of_key(self, key: str) -> DurableRedis:
        client = self.client()
        try:
            owner = client.get_node_from_key(key)
        finally:
            client.close()
        return next(node for node in self.nodes if node.port == owner.port)

    def stop(self) -> None:
        for node in self.nodes:
            node.crash()


@dataclass(frozen=True)
class Outcome:
    """One request of a load: when it left, when its answer came, what came."""

    route: str  # "events" or "recommend"
    sent: float  # time.monotonic()
    answered: float
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    body: dict | None
    event: dict | None  # the event an /events request carried

    @property
    def stored(self) -> bool:
        """Answered 200 with the event counted as accepted."""
        return self.status == 200 and self.body is not None and self.body.get("accepted") == 1


_timestamps = itertools.count(1_000_000)  # unique across every load of a process


@dataclass
class MixedLoad:
    """`clients` threads, each alternating one-event POST /events (unique event_id, user,
    timestamp) and POST /recommend, as fast as answers come (or every `pause_s`)."""

    url: str
    items: list[str]
    clients: int = 4
    users: int = 20
    headers: dict[str, str] = field(default_factory=dict)
    pause_s: float = 0.0
    timeout_s: float = 10.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> MixedLoad:
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __enter__(self) -> MixedLoad:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()  # also when the test failed half way: no client thread outlives it

    def stop(self) -> list[Outcome]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        return sorted(self.outcomes, key=lambda o: o.sent)

    def _client(self, number: int) -> None:
        chooser = random.Random(number)
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout_s) as http:
            for sequence in itertools.count():
                if self._stopping.is_set():
                    return
                user = f"load-{chooser.randrange(self.users)}"
                if sequence % 2 == 0:
                    event = {
                        "user_id": user,
                        "item_id": chooser.choice(self.items),
                        "timestamp": float(next(_timestamps)),
                        "event_id": f"c{number}-{sequence}",
                    }
                    self._send(http, "events", {"events": [event]}, event)
                else:
                    self._send(http, "recommend", {"user_id": user, "n": 5}, None)
                if self.pause_s:
                    time.sleep(self.pause_s)

    def _send(self, http: httpx.Client, route: str, body: dict, event: dict | None) -> None:
        sent = time.monotonic()
        try:
            reply = http.post("/" + route, json=body)
            status, answer = reply.status_code, _json_or_none(reply)
        except httpx.TransportError:
            status, answer = 0, None
        self.outcomes.append(Outcome(route, sent, time.monotonic(), status, answer, event))


def _json_or_none(reply: httpx.Response) -> dict | None:
    try:
        body = reply.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def logged_events(client: redis.Redis | redis.RedisCluster) -> list[LoggedRow]:
    return list(read_event_log(client))


def stored_rows(outcomes: list[Outcome]) -> set[LoggedRow]:
    """The events the service answered 200 (accepted) for, as the event log would show them."""
    return {
        (o.event["user_id"], o.event["item_id"], o.event["timestamp"])
        for o in outcomes
        if o.route == "events" and o.stored and o.event is not None
    }


def kill_process(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- hang, overload, failover


@dataclass(frozen=True)
class Answer(Outcome):
    """An Outcome with what a client needs to act on a 503: Retry-After and the raw body."""

    retry_after: str | None = None
    text: str = ""


@dataclass
class RecordingMixedLoad(MixedLoad):
    """MixedLoad whose outcomes are Answers (Retry-After header and body text kept)."""

    def _send(self, http: httpx.Client, route: str, body: dict, event: dict | None) -> None:
        sent = time.monotonic()
        try:
            reply = http.post("/" + route, json=body)
        except httpx.TransportError:
            self.outcomes.append(Answer(route, sent, time.monotonic(), 0, None, event))
            return
        self.outcomes.append(
            Answer(
                route,
                sent,
                time.monotonic(),
                reply.status_code,
                _json_or_none(reply),
                event,
                reply.headers.get("retry-after"),
                reply.text,
            )
        )


_event_loads = itertools.count()


@dataclass
class EventLoad(RecordingMixedLoad):
    """`clients` threads, each sending one-event POST /events requests (event_ids unique
    across every load of a process) as fast as answers come (or every `pause_s`)."""

    def _client(self, number: int) -> None:
        chooser = random.Random(number)
        load = next(_event_loads)
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout_s) as http:
            for sequence in itertools.count():
                if self._stopping.is_set():
                    return
                event = {
                    "user_id": f"load-{chooser.randrange(self.users)}",
                    "item_id": chooser.choice(self.items),
                    "timestamp": float(next(_timestamps)),
                    "event_id": f"l{load}c{number}-{sequence}",
                }
                self._send(http, "events", {"events": [event]}, event)
                if self.pause_s:
                    time.sleep(self.pause_s)


def row_of(event: dict) -> LoggedRow:
    """An event as the event log reads it back."""
    return (event["user_id"], event["item_id"], event["timestamp"])


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The service's GET /metrics as {(sample name, sorted label pairs): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def shed_count(samples: dict, route: str, reason: str) -> float:
    """cosrec_requests_shed_total{route, reason} in metric_samples' answer (0 if absent)."""
    labels = (("reason", reason), ("route", route))
    return samples.get(("cosrec_requests_shed_total", labels), 0.0)
