"""The paper's preprocessing applied to the real ML-1M sequences reproduces the shared split
files line for line (runs only where ../shared/data exists; the data is never copied here)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from training.readers import read_sequences
from training.split import filter_min_count, write_split_dir

ML1M = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m"
SEQUENCES = ML1M / "ml-1m_time_ordered_sequences.txt.gz"
PARTS = [f"{split}/{name}.txt" for split in ("test", "validation") for name in ("train", "test")]

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(
        not all((ML1M / "split" / f"{part}.gz").is_file() for part in PARTS)
        or not SEQUENCES.is_file(),
        reason="ML-1M files of ../shared/data are not present",
    ),
]


def test_ml1m_split_equals_the_shared_split_line_for_line(tmp_path: Path) -> None:
    log = filter_min_count(read_sequences(SEQUENCES), min_item_count=5, min_user_count=5)
    # The figures the paper (Table 2) and shared/data/README.md give after the filter.
    assert (log.num_users, log.num_items, log.num_interactions) == (6040, 3416, 999_611)
    write_split_dir(log, tmp_path)
    for part in PARTS:
        ours = (tmp_path / part).read_text().splitlines()
        with gzip.open(ML1M / "split" / f"{part}.gz", "rt") as handle:
            expected = handle.read().splitlines()
        first_difference = next(
            (n for n, (a, b) in enumerate(zip(ours, expected, strict=False), 1) if a != b), None
        )
        assert first_difference is None, f"{part}: first difference at line {first_difference}"
        assert len(ours) == len(expected), part
