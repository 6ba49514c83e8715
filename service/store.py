"""Users' histories in Redis: the atomic per-user event script and batched reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from contract.redis_layout import item_of_sequence_member, user_keys
from service import pipelining
from service.metrics import Metrics
from service.retention import EVENTS_SCRIPT, RetentionPolicy
from service.settings import Settings


class Event(NamedTuple):
    """One event to store (tuples: built thousands of times a second, cheaply)."""

    item_id: bytes  # UTF-8, as sent to Redis
    timestamp: float
    event_id: bytes  # the client's, or one the service assigned (so no retry applies it twice)
    fingerprint: bytes  # of what the client sent (item, timestamp): a reused id is a conflict
    known: bool  # the item is in the serving model's catalogue
    type: bytes = b""  # view, click, purchase... (b"": none given)
    rid: bytes = b""  # the recommendation_id it names (b"": none)


class UserEvents(NamedTuple):
    """One user's events of one request, in request order."""

    user_id: str
    events: tuple[Event, ...]


class History(NamedTuple):
    """What a recommendation reads: the newest item ids (oldest first) and the seen items."""

    recent_items: list[bytes]
    seen_items: list[bytes] | None


# What one event's script call answers for it.
STORED, DUPLICATE, CONFLICT = 1, 0, 2


def connect(settings: Settings) -> aioredis.Redis:
    """An asyncio client for a single Redis, a Cluster, or the master Sentinels point to.

    hiredis parses replies when installed (redis-py's default). No per-read socket timeout
    (redis-py 8 sets 5 s by default: a timer per reply): RedisStore bounds each whole round
    trip instead, one timer per pipeline.
    """
    options = {
        "socket_connect_timeout": settings.redis_timeout_s,
        "socket_timeout": None,
        "max_connections": settings.redis_max_connections,
        "health_check_interval": 0,
    }
    if settings.redis_sentinels:
        nodes = [_host_port(node) for node in settings.redis_sentinels.split(",")]
        sentinel = Sentinel(nodes, socket_connect_timeout=settings.redis_timeout_s)
        return sentinel.master_for(settings.redis_sentinel_master, **options)
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(settings.redis_url, **options)
    return aioredis.Redis.from_url(settings.redis_url, **options)


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.strip().rpartition(":")
    return host, int(port)


class RedisStore:
    """Many users per round trip, every round trip bounded by timeout_s.

    Failures surface as RedisError or OSError (TimeoutError included).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        retention: RetentionPolicy,
        timeout_s: float,
        metrics: Metrics,
        replica_acks: int = 0,
        replica_ack_timeout_ms: int = 1000,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.retention = retention
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.replica_acks = replica_acks
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        self._events = pipelining.Script(EVENTS_SCRIPT)

    async def ping(self, timeout_s: float | None = None) -> bool:
        """Redis answers within `timeout_s` (default: the store's); on a cluster, every primary
        answers (each holds some users)."""
        try:
            async with asyncio.timeout(self._bound(timeout_s)):
                if isinstance(self.client, aioredis.RedisCluster):
                    await self.client.initialize()  # no-op once the slot map is known
                    nodes = self.client.get_primaries()
                    return bool(nodes) and all(
                        await asyncio.gather(
                            *(self.client.ping(target_nodes=node) for node in nodes)
                        )
                    )
                return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def append(
        self, groups: Sequence[UserEvents], timeout_s: float | None = None
    ) -> list[list[int]]:
        """Apply every user's events: one atomic script per user, one round trip in all,
        bounded by `timeout_s` (default: the store's).

        Returns, per group, STORED, DUPLICATE or CONFLICT per event. Raises when Redis did
        not confirm every group; the caller then reports nothing as stored.
        """
        limits = self.retention.script_args(int(time.time() * 1000))
        calls: list[list[bytes]] = []
        for group in groups:
            keys = [key.encode() for key in user_keys(self.prefix, group.user_id).all()]
            args = [b"%d" % len(keys), *keys, *limits]
            for event in group.events:
                args += [event.event_id, event.item_id, repr(event.timestamp).encode()]
                args += [event.fingerprint, event.type, event.rid]
            calls.append(args)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._bound(timeout_s)):
                results = await self._run_script(self._events, calls)
        finally:
            self.metrics.redis_seconds.labels("events").observe(time.perf_counter() - started)
        return [[int(flag) for flag in result] for result in results]

    def _bound(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else max(0.0, min(timeout_s, self.timeout_s))

    async def read(
        self, requests: Sequence[tuple[str, int, bool]], timeout_s: float | None = None
    ) -> list[History]:
        """Each (user_id, window, with_seen): the user's last `window` items and seen items,
        in one round trip bounded by `timeout_s` (default: the store's).

        Plain ZRANGEs (no script: a read needs no atomicity, and Lua would cost Redis several
        times the commands' own time to copy the replies).
        """
        commands: list[list[bytes]] = []
        for user_id, window, with_seen in requests:
            keys = user_keys(self.prefix, user_id)
            commands.append([b"ZRANGE", keys.sequence.encode(), b"%d" % -window, b"-1"])
            if with_seen:
                commands.append([b"ZRANGE", keys.seen.encode(), b"0", b"-1"])
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._bound(timeout_s)):
                replies = await pipelining.execute(self.client, commands)
        finally:
            self.metrics.redis_seconds.labels("read").observe(time.perf_counter() - started)
        _raise_first_error(replies)
        histories = []
        position = iter(replies)
        for _, _, with_seen in requests:
            recent = list(map(item_of_sequence_member, next(position)))
            histories.append(History(recent, list(next(position)) if with_seen else None))
        return histories

    async def memory(self) -> MemoryStatus:
        """Redis's used and maximum memory (on a cluster: of the fullest primary)."""
        async with asyncio.timeout(self.timeout_s):
            if isinstance(self.client, aioredis.RedisCluster):
                infos = (await self.client.info("memory", target_nodes="primaries")).values()
            else:
                infos = [await self.client.info("memory")]
        statuses = [MemoryStatus(int(i["used_memory"]), int(i.get("maxmemory", 0))) for i in infos]
        return max(statuses, key=MemoryStatus.ratio)

    async def _run_script(self, script: pipelining.Script, calls: list[list[bytes]]) -> list:
        """EVALSHA of `script` with each call's arguments (numkeys, keys, args), one round
        trip (`pipelining.run_script`: more when Redis lost the script). With `replica_acks`,
        each round trip ends with WAIT: the writes must reach that many replicas, or
        ReplicationError (the writes are then not confirmed)."""
        replies = await pipelining.run_script(self.client, script, calls, self._execute)
        _raise_first_error(replies)
        return replies

    async def _execute(self, commands: list[list[bytes]]) -> list:
        if not self.replica_acks:
            return await pipelining.execute(self.client, commands)
        wait = [b"WAIT", b"%d" % self.replica_acks, b"%d" % self.replica_ack_timeout_ms]
        *replies, acknowledged = await pipelining.execute(self.client, [*commands, wait])
        if isinstance(acknowledged, Exception) or acknowledged < self.replica_acks:
            raise ReplicationError(
                f"{acknowledged} of {self.replica_acks} replicas acknowledged the writes"
            )
        return replies


class ReplicationError(RedisError):
    """Redis applied the writes, but fewer replicas than required confirmed them."""


@dataclass(frozen=True)
class MemoryStatus:
    used_bytes: int
    max_bytes: int  # 0: no limit set

    def ratio(self) -> float:
        return self.used_bytes / self.max_bytes if self.max_bytes else 0.0


def _raise_first_error(replies: list) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
