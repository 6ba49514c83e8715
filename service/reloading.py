"""The serving bundle as one swappable reference: hot reload by request or by watching the path.

A new bundle is loaded and verified off the event loop, then replaces the reference in one
assignment; a micro-batch already running keeps the bundle it started with. A bundle that
fails to load or verify leaves the current one serving, and the reason is kept and returned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from contract.bundle import MANIFEST_FILE, Bundle, BundleError, Precision, load_bundle
from service.metrics import Metrics

log = logging.getLogger("cosrec.service")


@dataclass(frozen=True)
class ReloadResult:
    reloaded: bool
    model_version: str  # the version serving after the attempt
    error: str | None = None


def _signature(path: Path) -> tuple[int, int, int] | None:
    """Identity of the manifest on disk; None while the bundle directory is being replaced."""
    try:
        stat = os.stat(path / MANIFEST_FILE)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class BundleHolder:
    def __init__(
        self,
        path: Path,
        device: str,
        threads: int,
        metrics: Metrics,
        primary: bool = True,
        precision: Precision = "fp32",
    ) -> None:
        self.path = path
        self._device = device
        self._threads = threads
        self._precision = precision
        self._metrics = metrics
        self._primary = primary  # the serving bundle: its version is cosrec_bundle_info's
        # Run after every reload that swapped a bundle in, whoever asked for it (the watch, an
        # admin route); set once the service's parts exist (service.lifespan).
        self.after_reload: Callable[[], Awaitable[None]] | None = None
        self._lock = asyncio.Lock()
        self._seen_signature = _signature(path)
        self._bundle = self._load()  # BundleError propagates: the service cannot start
        self._record(self._bundle)

    @property
    def current(self) -> Bundle:
        return self._bundle

    def _load(self) -> Bundle:
        return load_bundle(self.path, self._device, self._threads, self._precision)

    def _record(self, bundle: Bundle) -> None:
        self._metrics.reloads.labels("success").inc()
        if self._primary:
            self._metrics.bundle_loaded(bundle.model_version, time.time())

    async def reload(self) -> ReloadResult:
        """Load the bundle at the path again; swap it in only when it verifies, then run
        `after_reload` (whose failure is logged: the new bundle serves either way)."""
        result = await self._swap()
        if result.reloaded and self.after_reload is not None:
            try:
                await self.after_reload()
            except Exception:
                log.exception("after reloading %s", self.path)
        return result

    async def _swap(self) -> ReloadResult:
        async with self._lock:
            self._seen_signature = _signature(self.path)
            old = self._bundle
            try:
                new = await asyncio.to_thread(self._load)
                if new.sequence_length != old.sequence_length:
                    raise BundleError(
                        f"sequence_length {new.sequence_length} differs from the serving "
                        f"bundle's {old.sequence_length}"
                    )
            except BundleError as error:
                return self._refuse(old, str(error))
            except Exception as error:  # a bug or an odd bundle must never cost the service
                log.exception("bundle reload failed unexpectedly")
                return self._refuse(old, f"unexpected error: {type(error).__name__}: {error}")
            self._bundle = new
            self._record(new)
            log.info("bundle reloaded: %s -> %s", old.model_version, new.model_version)
            return ReloadResult(True, new.model_version)

    def _refuse(self, old: Bundle, reason: str) -> ReloadResult:
        self._metrics.reloads.labels("failure").inc()
        log.error("bundle reload refused, still serving %s: %s", old.model_version, reason)
        return ReloadResult(False, old.model_version, reason)

    async def watch(self, interval_s: float) -> None:
        """Reload whenever the manifest on disk changes: each change is tried once, and a
        refused bundle is tried again when its files change again."""
        while True:
            await asyncio.sleep(interval_s)
            signature = _signature(self.path)
            if signature is not None and signature != self._seen_signature:
                await self.reload()  # never raises: a failure is a refusal
