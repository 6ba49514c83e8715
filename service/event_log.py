"""Read the durable event log back (for `cosrec train`): pure redis-py, no torch.

Every accepted event is appended, inside the same atomic per-user script that updates the
user's history, to that user's stream `<prefix>:{u:<hex user id>}:log` (fields: item, ts and
eid when the event had one). Reading the log means scanning for those streams.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis

from service.keys import log_key_pattern, user_from_log_key

Row = tuple[str, str, float]  # (user_id, item_id, timestamp)


def read_event_log(
    client: redis.Redis, prefix: str = "cosrec", chunk: int = 10_000
) -> Iterator[Row]:
    """Every logged event as (user_id, item_id, timestamp).

    Users come in SCAN order; one user's rows are ordered by timestamp, ties in arrival order.
    Works with `redis.Redis` and `redis.RedisCluster` (SCAN visits every primary).
    """
    for raw_key in client.scan_iter(match=log_key_pattern(prefix), count=1000, _type="stream"):
        key = _decode(raw_key)
        user_id = user_from_log_key(prefix, key)
        rows: list[Row] = []
        start = "-"
        while True:
            entries = client.xrange(key, min=start, max="+", count=chunk)
            for _, fields in entries:
                item = fields[b"item"].decode()
                rows.append((user_id, item, float(fields[b"ts"])))
            if len(entries) < chunk:
                break
            start = "(" + _decode(entries[-1][0])  # exclusive: after the last entry read
        rows.sort(key=lambda row: row[2])  # stable: equal timestamps keep arrival order
        yield from rows


def read_event_log_url(url: str, prefix: str = "cosrec", cluster: bool = False) -> list[Row]:
    """read_event_log on a fresh client for `url` (closed afterwards)."""
    client = redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    try:
        return list(read_event_log(client, prefix))
    finally:
        client.close()


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
