"""The retrain loop's event archive: parts merged past MAX_PARTS, nothing lost or counted twice,
also when a merge was cut short before the merged parts were deleted."""

from __future__ import annotations

import shutil

from training.archive import MAX_PARTS, EventArchive


def append_polls(archive: EventArchive, polls: int) -> list[tuple[str, str, float]]:
    """One part per poll, as the loop writes them; returns every row written."""
    written = []
    for poll in range(polls):
        rows = [(f"u{poll % 7}", f"i{poll}-{k}", float(poll * 10 + k)) for k in range(3)]
        after = None if poll == 0 else f"{poll * 1000}-0"
        archive.append(rows, after, f"{(poll + 1) * 1000}-0")
        written += rows
    return written


def test_parts_are_merged_and_every_event_read_once_in_order(tmp_path):
    archive = EventArchive(tmp_path / "events")
    written = append_polls(archive, 3 * MAX_PARTS)
    assert len(archive.parts()) <= MAX_PARTS
    users, items, times = archive.read()
    assert list(zip(users, items, times, strict=True)) == written


def test_a_merge_cut_short_counts_no_event_twice(tmp_path):
    archive = EventArchive(tmp_path / "events")
    append_polls(archive, 3)
    saved = tmp_path / "saved"
    shutil.copytree(archive.directory, saved)
    archive.compact()
    assert len(archive.parts()) == 1
    for part in saved.iterdir():  # as if the process died before deleting the merged parts
        shutil.copy(part, archive.directory / part.name)
    assert len(archive.parts()) == 1
    assert len(archive.read()[0]) == 9
