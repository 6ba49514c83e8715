"""Users' histories in Redis: the atomic per-user event script and batched reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import NoScriptError, RedisError

from contract.redis_layout import item_of_sequence_member, user_keys
from service import pipelining
from service.metrics import Metrics
from service.settings import Settings

# One call applies one user's part of a request atomically. One INCRBY reserves a counter value
# per event; per event: skip it when its event_id is already remembered (ZADD NX answers 0);
# otherwise insert it into the time-ordered sequence (ties keep arrival order through the
# zero-padded counter), add a known item to the seen set and append it to the user's log
# stream. Then trim the bounded keys, only once they can exceed their bound: each holds at
# most one entry per counted event (and always when the counter starts afresh, in case it was
# lost while the other keys stayed). Returns 1 (stored) or 0 (duplicate) per event.
# (Few redis.call per event: each costs far more inside Lua than the command itself.)
EVENTS_SCRIPT = """
local max_history = tonumber(ARGV[1])
local max_ids = tonumber(ARGV[2])
local events = (#ARGV - 2) / 4
local counter = redis.call('INCRBY', KEYS[5], events) - events
local with_ids = false
local stored = {}
for i = 3, #ARGV, 4 do
  local eid, item, ts, known = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  counter = counter + 1
  local fresh = 1
  if eid ~= '' then
    with_ids = true
    fresh = redis.call('ZADD', KEYS[3], 'NX', counter, eid)
  end
  if fresh == 1 then
    redis.call('ZADD', KEYS[1], ts, string.format('%012d:%s', counter, item))
    if known == '1' then
      redis.call('SADD', KEYS[2], item)
    end
    if eid ~= '' then
      redis.call('XADD', KEYS[4], '*', 'item', item, 'ts', ts, 'eid', eid)
    else
      redis.call('XADD', KEYS[4], '*', 'item', item, 'ts', ts)
    end
  end
  stored[#stored + 1] = fresh
end
local fresh_counter = counter == events  -- new user, or a counter lost (evicted, deleted)
if counter > max_history or fresh_counter then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -max_history - 1)
end
if with_ids and (counter > max_ids or fresh_counter) then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -max_ids - 1)
end
return stored
"""


class Event(NamedTuple):
    """One event to store (tuples: built thousands of times a second, cheaply)."""

    item_id: bytes  # UTF-8, as sent to Redis
    timestamp: float
    event_id: str | None
    known: bool  # the item is in the serving model's catalogue


class UserEvents(NamedTuple):
    """One user's events of one request, in request order."""

    user_id: str
    events: tuple[Event, ...]


class History(NamedTuple):
    """What a recommendation reads: the newest item ids (oldest first) and the seen items."""

    recent_items: list[bytes]
    seen_items: list[bytes] | None


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


@dataclass
class _Script:
    source: str
    sha: bytes | None = None


def _bytes(value: str | int | float) -> bytes:
    return value.encode() if isinstance(value, str) else repr(value).encode()


class RedisStore:
    """Many users per round trip, every round trip bounded by timeout_s.

    Failures surface as RedisError or OSError (TimeoutError included).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        max_history: int,
        max_event_ids: int,
        timeout_s: float,
        metrics: Metrics,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._events = _Script(EVENTS_SCRIPT)
        self._limits = [_bytes(max_history), _bytes(max_event_ids)]

    async def ping(self) -> bool:
        """Redis answers; on a cluster, every primary answers (each holds some users)."""
        try:
            async with asyncio.timeout(self.timeout_s):
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

    async def append(self, groups: Sequence[UserEvents]) -> list[list[int]]:
        """Apply every user's events: one atomic script per user, one round trip in all.

        Returns, per group, 1 (stored) or 0 (duplicate event_id) per event. Raises when Redis
        did not confirm every group; the caller then reports nothing as stored.
        """
        calls: list[list[bytes]] = []
        for group in groups:
            keys = [key.encode() for key in user_keys(self.prefix, group.user_id).all()]
            args = [b"%d" % len(keys), *keys, *self._limits]
            for event in group.events:
                args += [
                    (event.event_id or "").encode(),
                    event.item_id,
                    repr(event.timestamp).encode(),
                    b"1" if event.known else b"0",
                ]
            calls.append(args)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                results = await self._run_script(self._events, calls)
        finally:
            self.metrics.redis_seconds.labels("events").observe(time.perf_counter() - started)
        return [[int(flag) for flag in result] for result in results]

    async def read(self, requests: Sequence[tuple[str, int, bool]]) -> list[History]:
        """Each (user_id, window, with_seen): the user's last `window` items and seen items.

        Plain ZRANGE and SMEMBERS (no script: a read needs no atomicity, and Lua would cost
        Redis several times the commands' own time to copy the replies).
        """
        commands: list[list[bytes]] = []
        for user_id, window, with_seen in requests:
            keys = user_keys(self.prefix, user_id)
            commands.append([b"ZRANGE", keys.sequence.encode(), b"%d" % -window, b"-1"])
            if with_seen:
                commands.append([b"SMEMBERS", keys.seen.encode()])
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
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

    async def _run_script(self, script: _Script, calls: list[list[bytes]]) -> list:
        """EVALSHA of `script` with each call's arguments (numkeys, keys, args), one round
        trip; loads the script first, and again for calls that find it missing."""
        if script.sha is None:
            script.sha = (await self.client.script_load(script.source)).encode()
        replies = await pipelining.execute(
            self.client, [[b"EVALSHA", script.sha, *args] for args in calls]
        )
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # Redis lost its script cache (restart, failover, SCRIPT FLUSH): a NOSCRIPT reply
            # means that call did not run, so running it now applies it exactly once.
            script.sha = (await self.client.script_load(script.source)).encode()
            retried = await pipelining.execute(
                self.client, [[b"EVALSHA", script.sha, *calls[i]] for i in missing]
            )
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
        _raise_first_error(replies)
        return replies


def _raise_first_error(replies: list) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
