"""The retrain loop's archive of the service's events: Parquet parts in the registry.

Redis's retention trims the durable log (by length, age, idle users); every event a retrain
cycle (or the loop's poll) reads is appended here first, so training keeps all of them. A part
per read, named after the cursors it spans, written whole and then renamed into place; past
MAX_PARTS parts they are merged into one, so a loop polling every few seconds for months does
not leave a file per poll.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

Row = tuple[str, str, float]  # (user_id, item_id, timestamp), as contract.event_log reads them
SCHEMA = pa.schema([("user", pa.string()), ("item", pa.string()), ("timestamp", pa.float64())])
MAX_PARTS = 32


class EventArchive:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def append(self, rows: Sequence[Row], after: str | None, up_to: str) -> Path | None:
        """Store the events read after cursor `after` up to cursor `up_to` (none: no part)."""
        if not rows:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        users, items, times = zip(*rows, strict=True)
        table = pa.table({"user": users, "item": items, "timestamp": times}, schema=SCHEMA)
        first = int((after or "0").split("-")[0])
        path = self._write(table, first, int(up_to.split("-")[0]))
        if len(self.parts()) > MAX_PARTS:
            self.compact()
        return path

    def compact(self) -> None:
        """Merge every part into one. Crash-safe: the merged part is renamed into place before
        the parts it covers are deleted, and `parts` ignores a part another one covers."""
        parts = self.parts()
        if len(parts) < 2:
            return
        table = pa.concat_tables(pq.read_table(part, schema=SCHEMA) for part in parts)
        merged = self._write(table, _span(parts[0])[0], _span(parts[-1])[1])
        for part in parts:
            if part != merged:
                part.unlink()

    def parts(self) -> list[Path]:
        """The parts in log order, without any that a merged part covers."""
        if not self.directory.is_dir():
            return []
        spans = {part: _span(part) for part in sorted(self.directory.glob("events-*.parquet"))}
        return [
            part
            for part, (first, last) in spans.items()
            if not any(
                other != (first, last) and other[0] <= first and last <= other[1]
                for other in spans.values()
            )
        ]

    def _write(self, table: pa.Table, first: int, last: int) -> Path:
        path = self.directory / f"events-{first:015d}-{last:015d}.parquet"
        staging = path.with_suffix(".tmp")
        pq.write_table(table, staging)
        os.replace(staging, path)
        return path

    def read(self) -> tuple[list[str], list[str], list[float]]:
        """Every archived event as three columns, in the order they were logged."""
        parts = self.parts()
        if not parts:
            return [], [], []
        table = pa.concat_tables(pq.read_table(part, schema=SCHEMA) for part in parts)
        return (
            table.column("user").to_pylist(),
            table.column("item").to_pylist(),
            table.column("timestamp").to_pylist(),
        )


def _span(part: Path) -> tuple[int, int]:
    """The cursors (ms) a part's events lie after and up to, from its name."""
    _, first, last = part.stem.split("-")
    return int(first), int(last)
