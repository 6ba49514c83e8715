"""The item catalogue: attributes per item id, kept in Redis, read by every worker from memory.

Redis holds the truth (keys: `contract.redis_layout`, `catalogue_keys`): a hash of item id ->
JSON attributes, a version counter and a bounded sorted set of item id -> the version of its
last change. One Lua script applies a write atomically (the hash, the change set, the version).

Each worker keeps its own copy in memory, so /recommend never reads the catalogue from Redis.
Every `COSREC_CATALOGUE_POLL_S` the worker reads the version and the start-up file's digest (one
round trip; a Redis that lost the file gets it again); when the version moved,
it reads only the items changed since its own version, or everything when the change set was
trimmed past it. A change is so honoured by every worker and replica within the poll interval
plus a round trip and the rebuild of the worker's index (`service.rules`); the worker that
answered the write refreshes at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from redis.exceptions import RedisError

from contract.redis_layout import CatalogueKeys, catalogue_keys
from service.metrics import Metrics

log = logging.getLogger("cosrec.service")

# Unix seconds (the bound keeps milliseconds sent by mistake out), as event timestamps.
MAX_TIMESTAMP = 1e11
ID_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # as the API's ids: no control characters
Label = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN)]
Time = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False)]
MAX_CATEGORIES, MAX_TAGS = 32, 64
WRITE_CHUNK = 1000  # items per script call


class ItemAttributes(BaseModel):
    """What the catalogue says of one item (every field optional)."""

    model_config = ConfigDict(extra="forbid")
    categories: list[Label] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    available: bool = Field(True, description="false: never recommended while rules ask for it")
    available_from: Time | None = Field(None, description="Unix seconds; available from then")
    available_until: Time | None = Field(None, description="Unix seconds; not from then on")
    tags: list[Label] = Field(default_factory=list, max_length=MAX_TAGS)
    popularity: float = Field(
        0.0,
        allow_inf_nan=False,
        description="orders the items the model does not know when popularity tops an answer up",
    )

    @model_validator(mode="after")
    def _window(self) -> ItemAttributes:
        if (
            self.available_from is not None
            and self.available_until is not None
            and self.available_until < self.available_from
        ):
            raise ValueError("available_until lies before available_from")
        return self

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(exclude_defaults=True))


def item_record_model(max_id_length: int) -> type[BaseModel]:
    """An item id with its attributes (a line of the start-up file, an entry of a bulk PUT)."""

    class ItemRecord(ItemAttributes):
        item_id: str = Field(min_length=1, max_length=max_id_length, pattern=ID_PATTERN)

    return ItemRecord


class Item(NamedTuple):
    """One item as the rules read it: compact, hashable parts, times as floats (+-inf: none)."""

    categories: tuple[str, ...]
    tags: frozenset[str]
    available: bool
    available_from: float
    available_until: float
    popularity: float

    def available_at(self, now: float) -> bool:
        return self.available and self.available_from <= now < self.available_until


UNLISTED = Item((), frozenset(), True, -math.inf, math.inf, 0.0)


def item_of(attributes: Mapping[str, Any]) -> Item:
    """An Item from stored (already validated) attributes; KeyError/TypeError if malformed."""
    start, until = attributes.get("available_from"), attributes.get("available_until")
    return Item(
        tuple(dict.fromkeys(attributes.get("categories", ()))),
        frozenset(attributes.get("tags", ())),
        bool(attributes.get("available", True)),
        -math.inf if start is None else float(start),
        math.inf if until is None else float(until),
        float(attributes.get("popularity", 0.0)),
    )


@dataclass(frozen=True)
class Catalogue:
    """One worker's copy: immutable, swapped as one reference. `version` is Redis's (-1: the
    start-up file, before Redis answered)."""

    version: int
    items: Mapping[str, Item]


EMPTY = Catalogue(-1, {})


# ---------------------------------------------------------------- the start-up file
def read_catalogue_file(path: Path, max_id_length: int = 256) -> list[tuple[str, ItemAttributes]]:
    """The items of a JSON Lines file (one object with `item_id` per line), or of a JSON file
    holding a list of such objects or an object of item id -> attributes. ValueError naming
    the line or entry that is wrong."""
    record_model = item_record_model(max_id_length)
    text = Path(path).read_bytes()
    entries: list[tuple[str, Any]]
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        whole = None
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    entries.append((f"line {number}", orjson.loads(line)))
                except orjson.JSONDecodeError as error:
                    raise ValueError(f"{path}: line {number}: not JSON: {error}") from None
    if isinstance(whole, list):
        entries = [(f"entry {k}", entry) for k, entry in enumerate(whole)]
    elif isinstance(whole, dict):
        if "item_id" in whole:  # a JSON Lines file of one line
            entries = [("line 1", whole)]
        else:
            entries = [
                (f"item {key!r}", {"item_id": key, **value} if isinstance(value, dict) else value)
                for key, value in whole.items()
            ]
    elif whole is not None:
        raise ValueError(f"{path}: expected items, found {type(whole).__name__}")
    items: dict[str, ItemAttributes] = {}
    for where, entry in entries:
        try:
            record = record_model.model_validate(entry)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            field = ".".join(map(str, first["loc"])) or "item"
            raise ValueError(f"{path}: {where}: {field}: {first['msg']}") from None
        items[record.item_id] = ItemAttributes.model_validate(
            record.model_dump(exclude={"item_id"})
        )
    return list(items.items())


def file_digest(items: Sequence[tuple[str, ItemAttributes]]) -> str:
    digest = hashlib.sha256()
    for item_id, attributes in items:
        digest.update(orjson.dumps([item_id, attributes.model_dump()]))
    return digest.hexdigest()


def catalogue_of(items: Iterable[tuple[str, ItemAttributes]], version: int = -1) -> Catalogue:
    return Catalogue(version, {item_id: item_of(a.model_dump()) for item_id, a in items})


# ---------------------------------------------------------------- Redis
# KEYS: items, changes, version, trimmed. ARGV: max items, max changes, then (id, JSON) pairs;
# an empty JSON deletes the item. Answers the new version, then per pair 1 (written or
# deleted), 0 (deleted but absent) or 2 (refused: the catalogue holds max items already).
# The change set is trimmed to its bound oldest first; `trimmed` keeps the newest version
# trimmed, so a worker whose copy is older than it reads the whole catalogue again.
WRITE_SCRIPT = """
local max_items, max_changes = tonumber(ARGV[1]), tonumber(ARGV[2])
local version = redis.call('INCR', KEYS[3])
local status = {version}
for i = 3, #ARGV, 2 do
  local id, value = ARGV[i], ARGV[i + 1]
  if value == '' then
    local gone = redis.call('HDEL', KEYS[1], id)
    if gone == 1 then redis.call('ZADD', KEYS[2], version, id) end
    status[#status + 1] = gone
  elseif redis.call('HLEN', KEYS[1]) < max_items or redis.call('HEXISTS', KEYS[1], id) == 1 then
    redis.call('HSET', KEYS[1], id, value)
    redis.call('ZADD', KEYS[2], version, id)
    status[#status + 1] = 1
  else
    status[#status + 1] = 2
  end
end
local excess = redis.call('ZCARD', KEYS[2]) - max_changes
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, excess - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  local newest = tonumber(oldest[#oldest])
  if newest > tonumber(redis.call('GET', KEYS[4]) or '0') then
    redis.call('SET', KEYS[4], newest)
  end
end
return status
"""
WRITTEN, ABSENT, REFUSED = 1, 0, 2


class CatalogueState(NamedTuple):
    version: int
    trimmed: int  # the newest version trimmed from the change set
    source: str | None  # digest of the start-up file last written


class CatalogueStore:
    """The catalogue's Redis keys: atomic writes, and the reads a worker's refresh needs."""

    def __init__(
        self, client: aioredis.Redis, prefix: str, max_items: int, timeout_s: float
    ) -> None:
        self.client = client
        self.keys: CatalogueKeys = catalogue_keys(prefix)
        self.max_items = max_items
        self.timeout_s = timeout_s
        # redis-py's Script runs EVALSHA and, when Redis lost its scripts (restart, failover),
        # loads the script again and retries
        self._write_script = client.register_script(WRITE_SCRIPT)

    async def write(self, changes: Sequence[tuple[str, bytes | None]]) -> tuple[int, list[int]]:
        """Apply (item id, JSON attributes, or None to delete) in order, chunk by chunk (each
        chunk atomic). The version after the last chunk, and a status per change."""
        version, statuses = 0, []
        for start in range(0, max(len(changes), 1), WRITE_CHUNK):
            args: list[bytes | str | int] = [self.max_items, self.max_items]
            for item_id, value in changes[start : start + WRITE_CHUNK]:
                args += [item_id, value or b""]
            reply = await self._run(args)
            version = int(reply[0])
            statuses += [int(status) for status in reply[1:]]
        return version, statuses

    async def _run(self, args: list) -> list:
        keys = [self.keys.items, self.keys.changes, self.keys.version, self.keys.trimmed]
        async with asyncio.timeout(self.timeout_s):
            return await self._write_script(keys=keys, args=args)

    async def publish_file(
        self, items: Sequence[tuple[str, ItemAttributes]], digest: str
    ) -> list[int]:
        """Write the start-up file's items and remember `digest` (their `file_digest`) as the
        file last written. Each item's status (WRITTEN, or REFUSED past
        COSREC_MAX_CATALOGUE_ITEMS)."""
        _, statuses = await self.write([(item_id, a.to_json()) for item_id, a in items])
        async with asyncio.timeout(self.timeout_s):
            await self.client.set(self.keys.source, digest)
        return statuses

    async def state(self) -> CatalogueState:
        """The version, the newest version trimmed from the change set, and the digest of the
        start-up file last written: one round trip."""
        async with asyncio.timeout(self.timeout_s):
            version, trimmed, source = await self.client.mget(
                self.keys.version, self.keys.trimmed, self.keys.source
            )
        return CatalogueState(
            int(version or 0), int(trimmed or 0), None if source is None else source.decode()
        )

    async def changed_since(self, version: int) -> list[tuple[str, int]]:
        """(item id, version of its last change) of the items changed after `version`."""
        async with asyncio.timeout(self.timeout_s):
            rows = await self.client.zrangebyscore(
                self.keys.changes, f"({version}", "+inf", withscores=True
            )
        return [(member.decode(), int(score)) for member, score in rows]

    async def get(self, item_ids: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = []
        for start in range(0, len(item_ids), WRITE_CHUNK):
            async with asyncio.timeout(self.timeout_s):
                values += await self.client.hmget(
                    self.keys.items, item_ids[start : start + WRITE_CHUNK]
                )
        return values

    async def everything(self) -> dict[str, bytes]:
        items: dict[str, bytes] = {}
        cursor = 0
        while True:
            async with asyncio.timeout(self.timeout_s):
                cursor, chunk = await self.client.hscan(self.keys.items, cursor, count=2000)
            items.update((key.decode(), value) for key, value in chunk.items())
            if cursor == 0:
                return items


def _parse(item_id: str, value: bytes) -> Item | None:
    try:
        return item_of(orjson.loads(value))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        log.error("catalogue: item %r has unreadable attributes in Redis: ignored", item_id)
        return None


class CatalogueCache:
    """This worker's copy of the catalogue, refreshed from Redis."""

    def __init__(self, store: CatalogueStore, metrics: Metrics, initial: Catalogue = EMPTY) -> None:
        self.store = store
        self.metrics = metrics
        self.current = initial
        self._synced = False  # whether `current` came from Redis (else: the file, or nothing)
        self._file_digest: str | None = None  # of the start-up file, computed once
        self._lock = asyncio.Lock()
        metrics.catalogue_items.set(len(initial.items))

    async def refresh(self, state: CatalogueState | None = None) -> bool:
        """Bring the copy up to Redis's version (`state`, read now if not given); True when it
        changed. Raises RedisError or OSError when Redis does not answer (the copy stays as it
        was). A `state` older than this copy only costs a whole read, never a wrong copy."""
        async with self._lock:
            old = self.current
            version, trimmed, _ = state or await self.store.state()
            if self._synced and version == old.version:
                self.metrics.catalogue_refreshed.set_to_current_time()
                return False
            if not self._synced or trimmed > old.version or version < old.version:
                # first read, trimmed past this copy, or Redis lost the catalogue (restart)
                values = await self.store.everything()
                items = {}
                for item_id, value in values.items():
                    parsed = _parse(item_id, value)
                    if parsed is not None:
                        items[item_id] = parsed
                new = Catalogue(version, items)
            else:
                changed = await self.store.changed_since(old.version)
                ids = [item_id for item_id, _ in changed]
                values = await self.store.get(ids)
                items = dict(old.items)
                for item_id, value in zip(ids, values, strict=True):
                    parsed = None if value is None else _parse(item_id, value)
                    if parsed is None:
                        items.pop(item_id, None)
                    else:
                        items[item_id] = parsed
                newest = max((v for _, v in changed), default=version)
                new = Catalogue(max(version, newest), items)
            self.current = new
            self._synced = True
            self.metrics.catalogue_items.set(len(new.items))
            self.metrics.catalogue_refreshed.set_to_current_time()
            return True

    async def start(self, file_items: Sequence[tuple[str, ItemAttributes]] | None) -> None:
        """Publish the start-up file unless Redis holds it already (so a restart does not undo
        the updates made at run time, and a Redis that lost it gets it again), then read the
        catalogue: one round trip when nothing changed."""
        state = await self.store.state()
        if file_items is not None:
            if self._file_digest is None:  # once: the watch comes through here every poll
                self._file_digest = file_digest(file_items)
            if state.source != self._file_digest:
                statuses = await self.store.publish_file(file_items, self._file_digest)
                refused = statuses.count(REFUSED)
                log.info(
                    "catalogue: %d items of the start-up file written to Redis",
                    len(statuses) - refused,
                )
                if refused:
                    log.error(
                        "catalogue: %d items of the start-up file refused: the catalogue holds "
                        "COSREC_MAX_CATALOGUE_ITEMS items",
                        refused,
                    )
                state = await self.store.state()
        await self.refresh(state)

    async def watch(
        self,
        interval_s: float,
        file_items: Sequence[tuple[str, ItemAttributes]] | None,
        after_change: Callable[[], Awaitable[None]],
    ) -> None:
        """Refresh every `interval_s` (then `after_change`), publishing the start-up file
        first whenever Redis does not hold it."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                old = self.current
                # start, not refresh: a Redis that lost the catalogue (restart without
                # persistence) gets the start-up file again, as at start-up
                await self.start(file_items)
                if self.current is not old:
                    await after_change()
            except (RedisError, OSError) as error:
                self.metrics.catalogue_refresh_failures.inc()
                log.debug("catalogue refresh failed: %s", error)
            except Exception:  # a bug must not end the watch: the copy would go stale silently
                self.metrics.catalogue_refresh_failures.inc()
                log.exception("catalogue refresh failed unexpectedly")
