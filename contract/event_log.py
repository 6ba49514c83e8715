"""Read the service's durable event log back (what `cosrec train --format redis` reads).

Every accepted event is appended, inside the same atomic per-user script that updates the
user's history, to that user's stream (`contract.redis_layout`: fields item, ts, and eid when
the event had one). Reading the log means scanning for those streams. Pure redis-py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from contract.redis_layout import (
    DEFAULT_PREFIX,
    LOG_ITEM,
    LOG_TIMESTAMP,
    log_key_pattern,
    user_from_log_key,
)

if TYPE_CHECKING:
    import redis

Row = tuple[str, str, float]  # (user_id, item_id, timestamp)


# Events are read up to this long before Redis's clock: an event appended while a read runs gets
# a later stream id, so the next read (after the cursor) finds it: none is read twice or skipped.
CURSOR_MARGIN_MS = 1000


def read_event_log(
    client: redis.Redis | redis.RedisCluster,
    prefix: str = DEFAULT_PREFIX,
    chunk: int = 10_000,
    after: str | None = None,
    up_to: str = "+",
) -> Iterator[Row]:
    """Every logged event as (user_id, item_id, timestamp); with `after` (a stream id, the
    cursor) only the events logged after it, and none after `up_to`.

    Users come in SCAN order; one user's rows are ordered by timestamp, ties in arrival order.
    Works with `redis.Redis` and `redis.RedisCluster` (SCAN visits every primary).
    """
    item_field, time_field = LOG_ITEM.encode(), LOG_TIMESTAMP.encode()
    for raw_key in client.scan_iter(match=log_key_pattern(prefix), count=1000, _type="stream"):
        key = _decode(raw_key)
        user_id = user_from_log_key(prefix, key)
        start = "-" if after is None else "(" + after
        rows = [
            (user_id, fields[item_field].decode(), float(fields[time_field]))
            for fields in stream_entries(client, key, chunk, start, up_to)
        ]
        rows.sort(key=lambda row: row[2])  # stable: equal timestamps keep arrival order
        yield from rows


def stream_entries(
    client: redis.Redis | redis.RedisCluster,
    key: str,
    chunk: int = 10_000,
    start: str = "-",
    up_to: str = "+",
) -> Iterator[dict]:
    """The fields of a stream's entries from `start` to `up_to`, `chunk` per XRANGE."""
    while True:
        entries = client.xrange(key, min=start, max=up_to, count=chunk)
        for _, fields in entries:
            yield fields
        if len(entries) < chunk:
            return
        start = "(" + _decode(entries[-1][0])  # exclusive: after the last entry read


def cursor_now(client: redis.Redis | redis.RedisCluster) -> str:
    """A cursor (stream id) safely behind Redis's clock: read up to it, later reads after it."""
    seconds, microseconds = client.time()
    milliseconds = int(seconds) * 1000 + int(microseconds) // 1000 - CURSOR_MARGIN_MS
    # a whole id (the last sequence number of that millisecond): "(" + it excludes them all
    return f"{milliseconds}-{2**64 - 1}"


def open_client(url: str, cluster: bool = False) -> redis.Redis | redis.RedisCluster:
    """A synchronous client for `url`: one Redis (or what Sentinel names), or a Cluster."""
    import redis

    return redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)


def read_event_log_url(url: str, prefix: str = DEFAULT_PREFIX, cluster: bool = False) -> list[Row]:
    """read_event_log on a fresh client for `url` (closed afterwards)."""
    client = open_client(url, cluster)
    try:
        return list(read_event_log(client, prefix))
    finally:
        client.close()


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
