"""How full Redis is: read every few seconds, exported as metrics and in /readyz.

Compose runs Redis with a maxmemory and `noeviction`: at the limit, writes fail (503, nothing
acknowledged is dropped). This watch says so before it happens.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from service.metrics import Metrics
from service.store import MemoryStatus, RedisStore

log = logging.getLogger("cosrec.service")


class MemoryWatch:
    def __init__(self, store: RedisStore, metrics: Metrics, warn_ratio: float) -> None:
        self._store = store
        self._metrics = metrics
        self.warn_ratio = warn_ratio
        self.last: MemoryStatus | None = None  # None until read (or while Redis is down)

    @property
    def near_limit(self) -> bool:
        return self.last is not None and self.last.ratio() >= self.warn_ratio

    async def read(self) -> None:
        try:
            self.last = await self._store.memory()
        except (RedisError, OSError):
            self.last = None
            return
        self._metrics.redis_memory_used.set(self.last.used_bytes)
        self._metrics.redis_memory_max.set(self.last.max_bytes)
        if self.near_limit:
            log.warning(
                "Redis memory at %.0f%% of maxmemory: writes fail at 100%%", 100 * self.last.ratio()
            )

    async def watch(self, interval_s: float) -> None:
        while True:
            await self.read()
            await asyncio.sleep(interval_s)
