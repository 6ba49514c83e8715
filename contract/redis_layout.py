"""The Redis key layout: every key of one user shares a `{u:<hex>}` hash tag.

The user id is hex-encoded UTF-8, so keys of different users never collide, a user id can
neither close the hash tag nor reach outside its prefix, and Redis Cluster puts all of one
user's keys into one slot (per-user atomic scripts, no cross-slot commands).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "cosrec"

# One suffix per kind of per-user key; the order is the order of KEYS in the events script.
SEQUENCE = "seq"  # ZSET  member b"<counter:012d>:<item id>", score = event timestamp
SEEN = "seen"  # SET   item ids of the model's catalogue the user has interacted with
EVENT_IDS = "ids"  # ZSET  event_id -> counter; the newest max_event_ids are remembered
LOG = "log"  # STREAM every accepted event: item, ts[, eid]; the durable log training reads
COUNTER = "ctr"  # STRING last counter value (insertion order among equal timestamps)
USER_KEY_KINDS = (SEQUENCE, SEEN, EVENT_IDS, LOG, COUNTER)

# Fields of a log stream entry.
LOG_ITEM, LOG_TIMESTAMP, LOG_EVENT_ID = "item", "ts", "eid"
# A SEQUENCE member is "<counter, 12 digits>:<item id>": the item id follows the first colon.
SEQUENCE_COUNTER_DIGITS = 12


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


def item_of_sequence_member(member: bytes) -> bytes:
    """The item id of a SEQUENCE member (UTF-8, as Redis returns it)."""
    return member.split(b":", 1)[1]


def log_key_pattern(prefix: str) -> str:
    """SCAN pattern of every user's log stream."""
    return f"{prefix}:{{u:*}}:{LOG}"


def user_from_log_key(prefix: str, key: str) -> str:
    head, tail = f"{prefix}:", f":{LOG}"
    if not (key.startswith(head) and key.endswith(tail)):
        raise ValueError(f"not a log key under {prefix!r}: {key!r}")
    return user_from_tag(key[len(head) : -len(tail)])
