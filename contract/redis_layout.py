"""The Redis key layout: every key of one user shares a `{u:<hex>}` hash tag.

The user id is hex-encoded UTF-8, so keys of different users never collide, a user id can
neither close the hash tag nor reach outside its prefix, and Redis Cluster puts all of one
user's keys into one slot (per-user atomic scripts, no cross-slot commands).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "cosrec"

# One suffix per kind of per-user key; the order is the order of KEYS in the events script.
# Every key of a user expires after COSREC_USER_TTL_S without an event (docs/service.md).
SEQUENCE = "seq"  # ZSET   member b"<counter:012d>:<item id>", score = event timestamp
SEEN = "items"  # ZSET   every item id the user interacted with -> counter of its last event
EVENT_IDS = "ids"  # ZSET   event_id -> arrival time (ms); remembered for a TTL, bounded
EVENT_CONTENT = "idc"  # HASH   event_id -> fingerprint of its item and timestamp (conflicts)
LOG = "log"  # STREAM every accepted event: item, ts, eid; the durable log training reads
COUNTER = "ctr"  # STRING last counter value (insertion order among equal timestamps)
USER_KEY_KINDS = (SEQUENCE, SEEN, EVENT_IDS, EVENT_CONTENT, LOG, COUNTER)

# Fields of a log stream entry; type and rid only when the event carried them (issue 14).
LOG_ITEM, LOG_TIMESTAMP, LOG_EVENT_ID = "item", "ts", "eid"
LOG_TYPE, LOG_RECOMMENDATION = "type", "rid"

# A user's served recommendations (STREAM, written by /recommend, not by the events script, so
# not in USER_KEY_KINDS): rid, v (variant), items (ids joined by US, 0x1f), ts; bounded by
# COSREC_MAX_RECOMMENDATIONS_PER_USER, expires COSREC_USER_TTL_S after the newest.
RECOMMENDATIONS = "recs"
REC_ID, REC_VARIANT, REC_ITEMS, REC_TIMESTAMP = "rid", "v", "items", "ts"
REC_ITEM_SEPARATOR = "\x1f"  # ids never hold control characters (the API refuses them)

# The item catalogue: one hash tag, so its keys share one Redis Cluster slot (atomic writes).
CATALOGUE_TAG = "{catalogue}"
CATALOGUE_KINDS = ("items", "changes", "version", "trimmed", "source")
# items: HASH item id -> JSON attributes; changes: ZSET item id -> version of its last change
# (bounded; trimmed: STRING, the newest version trimmed from it); version: STRING, +1 per
# write; source: STRING, sha256 of the start-up file last loaded.
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
    event_content: str
    log: str
    counter: str

    def all(self) -> list[str]:
        return [
            self.sequence, self.seen, self.event_ids, self.event_content, self.log, self.counter
        ]  # fmt: skip


def user_keys(prefix: str, user_id: str) -> UserKeys:
    base = f"{prefix}:{user_tag(user_id)}:"
    return UserKeys(*(base + kind for kind in USER_KEY_KINDS))


def recommendations_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:{user_tag(user_id)}:{RECOMMENDATIONS}"


@dataclass(frozen=True)
class CatalogueKeys:
    items: str
    changes: str
    version: str
    trimmed: str
    source: str


def catalogue_keys(prefix: str) -> CatalogueKeys:
    return CatalogueKeys(*(f"{prefix}:{CATALOGUE_TAG}:{kind}" for kind in CATALOGUE_KINDS))


def item_of_sequence_member(member: bytes) -> bytes:
    """The item id of a SEQUENCE member (UTF-8, as Redis returns it)."""
    return member.split(b":", 1)[1]


def log_key_pattern(prefix: str) -> str:
    """SCAN pattern of every user's log stream."""
    return f"{prefix}:{{u:*}}:{LOG}"


def recommendations_key_pattern(prefix: str) -> str:
    """SCAN pattern of every user's recommendations stream."""
    return f"{prefix}:{{u:*}}:{RECOMMENDATIONS}"


def user_from_log_key(prefix: str, key: str, kind: str = LOG) -> str:
    head, tail = f"{prefix}:", f":{kind}"
    if not (key.startswith(head) and key.endswith(tail)):
        raise ValueError(f"not a log key under {prefix!r}: {key!r}")
    return user_from_tag(key[len(head) : -len(tail)])
