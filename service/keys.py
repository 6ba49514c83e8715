"""The Redis key layout: every key of one user shares a `{u:<hex>}` hash tag.

The user id is hex-encoded UTF-8, so keys of different users never collide, a user id can
neither close the hash tag nor reach outside its prefix, and Redis Cluster puts all of one
user's keys into one slot (per-user atomic scripts, no cross-slot commands).
"""

from __future__ import annotations

from dataclasses import dataclass

# One suffix per kind of per-user key; the order is the order of KEYS in the events script.
SEQUENCE = "seq"  # ZSET  member b"<counter:012d>:<item id>", score = event timestamp
SEEN = "seen"  # SET   item ids of the model's catalogue the user has interacted with
EVENT_IDS = "ids"  # ZSET  event_id -> counter; the newest max_event_ids are remembered
LOG = "log"  # STREAM every accepted event: item, ts[, eid]; the durable log training reads
COUNTER = "ctr"  # STRING last counter value (insertion order among equal timestamps)
USER_KEY_KINDS = (SEQUENCE, SEEN, EVENT_IDS, LOG, COUNTER)


def user_tag(user_id: str) -> str:
    return "{u:" + user_id.encode().hex() + "}"


def user_from_tag(tag: str) -> str:
    """Inverse of user_tag: '{u:6869}' -> 'hi'."""
    if not (tag.startswith("{u:") and tag.endswith("}")):
        raise ValueError(f"not a user hash tag: {tag!r}")
    return bytes.fromhex(tag[3:-1]).decode()


@dataclass(frozen=True)
class UserKeys:
    sequence: str
    seen: str
    event_ids: str
    log: str
    counter: str

    def all(self) -> list[str]:
        return [self.sequence, self.seen, self.event_ids, self.log, self.counter]


def user_keys(prefix: str, user_id: str) -> UserKeys:
    base = f"{prefix}:{user_tag(user_id)}:"
    return UserKeys(*(base + kind for kind in USER_KEY_KINDS))


def log_key_pattern(prefix: str) -> str:
    """SCAN pattern of every user's log stream."""
    return f"{prefix}:{{u:*}}:{LOG}"


def user_from_log_key(prefix: str, key: str) -> str:
    head, tail = f"{prefix}:", f":{LOG}"
    if not (key.startswith(head) and key.endswith(tail)):
        raise ValueError(f"not a log key under {prefix!r}: {key!r}")
    return user_from_tag(key[len(head) : -len(tail)])
