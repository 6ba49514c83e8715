"""The retrain loop's archive of the service's events: Parquet parts in the registry.

Redis's retention trims the durable log (by length, age, idle users); every event a retrain
cycle reads is appended here first, so training keeps all of them. A part per cycle, named
after the cursor it reached, written whole and then renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

Row = tuple[str, str, float]  # (user_id, item_id, timestamp), as contract.event_log reads them
SCHEMA = pa.schema([("user", pa.string()), ("item", pa.string()), ("timestamp", pa.float64())])


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
        first = (after or "0").split("-")[0]
        path = self.directory / f"events-{int(first):015d}-{int(up_to.split('-')[0]):015d}.parquet"
        staging = path.with_suffix(".tmp")
        pq.write_table(table, staging)
        os.replace(staging, path)
        return path

    def parts(self) -> list[Path]:
        return sorted(self.directory.glob("events-*.parquet")) if self.directory.is_dir() else []

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

    def time_range(self) -> tuple[float | None, float | None]:
        """The oldest and newest event time in the archive."""
        parts = self.parts()
        if not parts:
            return None, None
        times = pa.concat_arrays(
            [
                pq.read_table(part, columns=["timestamp"]).column(0).combine_chunks()
                for part in parts
            ]
        )
        bounds = pa.compute.min_max(times)
        return bounds["min"].as_py(), bounds["max"].as_py()
