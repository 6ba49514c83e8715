"""The bundle registry: bundles side by side, the serving one named by an atomically swapped
pointer. Training writes it (`cosrec retrain`, `cosrec rollback`), the service follows it
(COSREC_BUNDLE=REGISTRY/current: its bundle watcher sees the pointer move).

    REGISTRY/
      <model_version>/    a bundle (contract.bundle), and checkpoint.pt when training kept one
      current             symlink to the serving <model_version>/, replaced by rename: a reader
                          sees the old bundle or the new one, never none and never half of one
      state.json          the retrain loop's event cursor and the history of promotions
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from contract.bundle import MANIFEST_FILE, BundleError, Manifest, parse_manifest

POINTER = "current"
STATE_FILE = "state.json"


class Promotion(BaseModel):
    version: str
    at: str = Field(description="ISO 8601 UTC")
    reason: str = Field(description="promoted by a retrain cycle, a rollback, a first bundle")


class RegistryState(BaseModel):
    cursor: str | None = Field(None, description="stream id up to which the event log was read")
    promotions: list[Promotion] = Field(default_factory=list, description="oldest first")


@dataclass(frozen=True)
class Entry:
    version: str
    path: Path
    manifest: Manifest
    serving: bool


class Registry:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def pointer(self) -> Path:
        return self.root / POINTER

    def serving_version(self) -> str | None:
        """The version the pointer names, None while there is none."""
        try:
            return os.readlink(self.pointer)
        except FileNotFoundError:
            return None

    def entries(self) -> list[Entry]:
        """Every bundle in the registry, newest first (by created_at); unreadable ones skipped."""
        serving = self.serving_version()
        found = []
        for path in self.root.iterdir() if self.root.is_dir() else []:
            if path.name == POINTER or not (path / MANIFEST_FILE).is_file():
                continue
            try:
                manifest = parse_manifest((path / MANIFEST_FILE).read_bytes())
            except BundleError:
                continue
            found.append(Entry(path.name, path, manifest, path.name == serving))
        return sorted(found, key=lambda e: (e.manifest.created_at, e.version), reverse=True)

    def add(self, bundle: Path) -> Path:
        """Move a finished bundle directory into the registry, named by its model_version."""
        manifest = parse_manifest((bundle / MANIFEST_FILE).read_bytes())
        target = self.root / manifest.model_version
        if target.exists():
            raise ValueError(f"{target}: the registry already holds {manifest.model_version}")
        self.root.mkdir(parents=True, exist_ok=True)
        os.replace(bundle, target)
        return target

    def promote(self, version: str, reason: str) -> None:
        """Point `current` at `version` in one atomic rename, and record why."""
        if not (self.root / version / MANIFEST_FILE).is_file():
            raise ValueError(f"the registry holds no bundle {version!r}")
        staging = self.root / f".{POINTER}.{os.getpid()}.tmp"
        staging.unlink(missing_ok=True)
        os.symlink(version, staging)  # relative: the registry can move as a whole
        os.replace(staging, self.pointer)
        state = self.state()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        state.promotions.append(Promotion(version=version, at=now, reason=reason))
        self.save_state(state)

    def rollback(self, version: str | None = None) -> str:
        """Serve `version`, or by default the bundle that served before the current one."""
        if version is None:
            current = self.serving_version()
            earlier = [p.version for p in self.state().promotions if p.version != current]
            if not earlier:
                raise ValueError("nothing to roll back to: no other bundle has served")
            version = earlier[-1]
        self.promote(version, f"rollback from {self.serving_version()}")
        return version

    def prune(self, keep: int) -> list[str]:
        """Delete all but the `keep` newest bundles; never the serving one. Returns the deleted."""
        deleted = []
        for entry in self.entries()[keep:]:
            if not entry.serving:
                shutil.rmtree(entry.path)
                deleted.append(entry.version)
        return deleted

    def state(self) -> RegistryState:
        path = self.root / STATE_FILE
        if not path.is_file():
            return RegistryState()
        return RegistryState.model_validate_json(path.read_bytes())

    def save_state(self, state: RegistryState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.root / STATE_FILE, state.model_dump_json(indent=2) + "\n")


def registry_of(bundle_path: Path) -> Registry | None:
    """The registry whose pointer `bundle_path` is (a service's COSREC_BUNDLE), else None."""
    if bundle_path.name == POINTER and bundle_path.is_symlink():
        return Registry(bundle_path.parent)
    return None


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def describe(entry: Entry) -> dict[str, Any]:
    """One line of `cosrec bundles list`, as data."""
    lineage = entry.manifest.lineage
    return {
        "version": entry.version,
        "serving": entry.serving,
        "created_at": entry.manifest.created_at,
        "decision": None if lineage is None else lineage.decision,
        "parent": None if lineage is None else lineage.parent_version,
    }
