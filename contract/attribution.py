"""Recommendations and the interactions they caused: the ids the service hands out, and the
join that `cosrec experiment report` reads back from Redis.

The service writes two things (key layout: `contract.redis_layout`):
- every answer of /recommend, with its `recommendation_id` (rid), onto the user's
  recommendations stream: rid, variant, the item ids shown, the time;
- every event that names a rid (`/events`, `recommendation_id`, and its `type`), onto the
  user's durable log stream, inside the same atomic script as the event itself.

An interaction is **attributed** to a recommendation when the rid it names is one of that
user's recorded recommendations and its item was among the items shown: a click on another
item, or a rid of another user, counts as unmatched, never for a variant. Pure redis-py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from contract.event_log import stream_entries
from contract.redis_layout import (
    DEFAULT_PREFIX,
    LOG_ITEM,
    LOG_RECOMMENDATION,
    LOG_TYPE,
    REC_ID,
    REC_ITEM_SEPARATOR,
    REC_ITEMS,
    REC_VARIANT,
    RECOMMENDATIONS,
    recommendations_key_pattern,
    user_from_log_key,
    user_keys,
)

if TYPE_CHECKING:
    import redis

# A recommendation id: "<variant>.<24 hex digits>" (the variant first, so an event naming it
# can be counted per variant without a Redis read; the report trusts only the stored record).
RID_SEPARATOR = "."
UNTYPED = "none"  # the `type` label and report key of an event sent without a type


def new_recommendation_id(variant: str) -> str:
    return variant + RID_SEPARATOR + os.urandom(12).hex()


def variant_of(recommendation_id: str) -> str:
    """The variant a rid names ('' when it is not one the service made)."""
    variant, separator, _ = recommendation_id.rpartition(RID_SEPARATOR)
    return variant if separator else ""


@dataclass
class VariantCounts:
    """One variant's recommendations and what users did with them."""

    served: int = 0  # recorded recommendations
    # per event type: recommendations with at least one attributed interaction of that type
    acted: dict[str, int] = field(default_factory=dict)
    # per event type: attributed interactions
    interactions: dict[str, int] = field(default_factory=dict)


@dataclass
class Attribution:
    variants: dict[str, VariantCounts] = field(default_factory=dict)
    unmatched: int = 0  # events naming a rid that is not the user's, or an item not shown
    users: int = 0  # users with recorded recommendations


def read_attribution(
    client: redis.Redis | redis.RedisCluster, prefix: str = DEFAULT_PREFIX, chunk: int = 10_000
) -> Attribution:
    """Every user's recorded recommendations joined with the events of their log that name
    one (SCAN for the recommendations streams, then XRANGE both streams of each user)."""
    result = Attribution()
    for user_id, shown in _recommendations(client, prefix, chunk):
        result.users += 1
        acted: dict[str, set[str]] = {}  # rid -> types acted on
        for variant, _ in shown.values():
            result.variants.setdefault(variant, VariantCounts()).served += 1
        for fields in stream_entries(client, user_keys(prefix, user_id).log, chunk):
            rid = fields.get(LOG_RECOMMENDATION.encode())
            if rid is None:
                continue
            record = shown.get(rid.decode())
            item = fields[LOG_ITEM.encode()].decode()
            if record is None or item not in record[1]:
                result.unmatched += 1
                continue
            kind = fields.get(LOG_TYPE.encode(), UNTYPED.encode()).decode() or UNTYPED
            counts = result.variants[record[0]]
            counts.interactions[kind] = counts.interactions.get(kind, 0) + 1
            acted.setdefault(rid.decode(), set()).add(kind)
        for rid, kinds in acted.items():
            counts = result.variants[shown[rid][0]]
            for kind in kinds:
                counts.acted[kind] = counts.acted.get(kind, 0) + 1
    return result


def _recommendations(
    client: redis.Redis | redis.RedisCluster, prefix: str, chunk: int
) -> Iterator[tuple[str, dict[str, tuple[str, frozenset[str]]]]]:
    """(user_id, {rid: (variant, items shown)}) per user with recorded recommendations."""
    pattern = recommendations_key_pattern(prefix)
    for raw_key in client.scan_iter(match=pattern, count=1000, _type="stream"):
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        user_id = user_from_log_key(prefix, key, RECOMMENDATIONS)
        shown = {
            fields[REC_ID.encode()].decode(): (
                fields[REC_VARIANT.encode()].decode(),
                frozenset(fields[REC_ITEMS.encode()].decode().split(REC_ITEM_SEPARATOR)),
            )
            for fields in stream_entries(client, key, chunk)
        }
        yield user_id, shown
