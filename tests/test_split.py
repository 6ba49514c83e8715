"""The paper's preprocessing and splits on small hand-made logs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from contract.ids import Vocabulary
from training.dataset import Sequences
from training.readers import DataFormatError, read_caser
from training.split import (
    chronological_split,
    filter_min_count,
    prepare_split,
    read_split,
    validation_split,
    write_caser,
    write_split_dir,
)


def make_log(users: dict[str, list[str]]) -> Sequences:
    """Sequences from external ids; item indices in order of first appearance."""
    items: dict[str, int] = {}
    for seq in users.values():
        for item in seq:
            items.setdefault(item, len(items) + 1)
    return Sequences(
        users=Vocabulary(tuple(users)),
        items=Vocabulary(tuple(items)),
        sequences=tuple(
            np.array([items[i] for i in seq], dtype=np.int64) for seq in users.values()
        ),
    )


def external(seqs: Sequences) -> dict[str, list[str]]:
    return {
        user: [seqs.items.external(int(i)) for i in seq]
        for user, seq in zip(seqs.users.ids, seqs.sequences, strict=True)
    }


def lengths_log(lengths: list[int]) -> Sequences:
    """User k has items 1..n_k in order (so a split's content is easy to predict)."""
    return Sequences(
        users=Vocabulary(tuple(f"u{n}" for n in lengths)),
        items=Vocabulary(tuple(str(i) for i in range(1, max(lengths) + 1))),
        sequences=tuple(np.arange(1, n + 1, dtype=np.int64) for n in lengths),
    )


# n -> (ceil(0.8 n), ceil(0.7 n)), worked by hand.
CEILINGS = {1: (1, 1), 2: (2, 2), 3: (3, 3), 4: (4, 3), 5: (4, 4), 6: (5, 5), 9: (8, 7), 10: (8, 7)}


def test_chronological_split_takes_ceil_of_80_percent() -> None:
    log = lengths_log(list(CEILINGS))
    split = chronological_split(log)
    for n, train, test in zip(CEILINGS, split.train.sequences, split.test.sequences, strict=True):
        assert train.tolist() == list(range(1, CEILINGS[n][0] + 1))
        assert test.tolist() == list(range(CEILINGS[n][0] + 1, n + 1))
    assert split.train.users == log.users
    assert split.train.items == log.items


def test_validation_split_takes_ceil_of_70_then_80_percent() -> None:
    log = lengths_log(list(CEILINGS))
    split = validation_split(log)
    for n, train, valid in zip(CEILINGS, split.train.sequences, split.test.sequences, strict=True):
        train_n, valid_end = CEILINGS[n][1], CEILINGS[n][0]
        assert train.tolist() == list(range(1, train_n + 1))
        assert valid.tolist() == list(range(train_n + 1, valid_end + 1))


def test_fraction_arithmetic_is_exact_where_floats_are_not() -> None:
    # In floating point 0.55 * 100 = 55.00000000000001, whose ceiling is 56; the split takes 55.
    assert 0.55 * 100 > 55
    split = chronological_split(lengths_log([100]), 0.55)
    assert len(split.train.sequences[0]) == 55


def test_split_sizes_match_integer_arithmetic_for_many_lengths() -> None:
    lengths = list(range(1, 301))
    test_split = chronological_split(lengths_log(lengths), 0.8)
    valid_split = validation_split(lengths_log(lengths), Fraction(7, 10), 0.8)
    for n, train, valid_train, valid in zip(
        lengths,
        test_split.train.sequences,
        valid_split.train.sequences,
        valid_split.test.sequences,
        strict=True,
    ):
        assert len(train) == (4 * n + 4) // 5
        assert len(valid_train) == (7 * n + 9) // 10
        assert len(valid) == (4 * n + 4) // 5 - (7 * n + 9) // 10


def test_bad_fractions_are_rejected() -> None:
    log = lengths_log([3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        chronological_split(log, 1.5)
    with pytest.raises(ValueError, match="must not exceed"):
        validation_split(log, 0.9, 0.8)


def test_filter_drops_rare_items_then_short_users_and_reindexes() -> None:
    log = make_log(
        {
            "u1": ["a", "b", "c", "a"],
            "u2": ["b", "a", "d"],
            "u3": ["d", "c", "b"],
            "u4": ["e", "a"],
        }
    )
    # Counts: a 4, b 3, c 2, d 2, e 1. Keep items with >= 2, then users with >= 3 left.
    kept = filter_min_count(log, min_item_count=2, min_user_count=3)
    assert kept.items.ids == ("a", "b", "c", "d")  # original relative order, contiguous
    assert kept.users.ids == ("u1", "u2", "u3")  # u4 keeps only "a"
    assert external(kept) == {
        "u1": ["a", "b", "c", "a"],
        "u2": ["b", "a", "d"],
        "u3": ["d", "c", "b"],
    }
    # One pass, not a k-core: dropping u4 leaves "a" with 3 actions, still kept; and a
    # threshold that removes an item mid-sequence keeps the order of the rest.
    strict = filter_min_count(log, min_item_count=3, min_user_count=1)
    assert external(strict) == {"u1": ["a", "b", "a"], "u2": ["b", "a"], "u3": ["b"], "u4": ["a"]}


def test_caser_files_round_trip_through_read_split(tmp_path: Path) -> None:
    log = make_log({"9": ["m1", "m2", "m3", "m4", "m5"], "4": ["m2", "m6"]})
    write_split_dir(log, tmp_path)
    assert (tmp_path / "test" / "train.txt").read_text() == (
        "9 m1 1\n9 m2 1\n9 m3 1\n9 m4 1\n4 m2 1\n4 m6 1\n"
    )
    assert (tmp_path / "test" / "test.txt").read_text() == "9 m5 1\n"
    split = read_split(tmp_path / "test")
    assert external(split.train) == {"9": ["m1", "m2", "m3", "m4"], "4": ["m2", "m6"]}
    assert external(split.test) == {"9": ["m5"], "4": []}
    # m5 is only in test, yet it has an index in the shared vocabulary.
    assert split.train.items.ids == ("m1", "m2", "m3", "m4", "m6", "m5")
    valid = read_split(tmp_path / "validation")
    assert external(valid.train) == {"9": ["m1", "m2", "m3", "m4"], "4": ["m2", "m6"]}
    assert external(valid.test) == {"9": [], "4": []}


def test_gzip_output_is_reproducible_and_readable(tmp_path: Path) -> None:
    log = make_log({"1": ["x", "y"], "2": ["y"]})
    write_caser(log, tmp_path / "a.txt.gz")
    write_caser(log, tmp_path / "b.txt.gz")
    assert (tmp_path / "a.txt.gz").read_bytes() == (tmp_path / "b.txt.gz").read_bytes()
    assert external(read_caser(tmp_path / "a.txt.gz")) == external(log)


def test_read_split_needs_both_files(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("1 a 1\n")
    with pytest.raises(DataFormatError, match=r"no test\.txt"):
        read_split(tmp_path)


def test_prepare_split_reads_filters_and_writes(tmp_path: Path) -> None:
    data = tmp_path / "log.csv"
    rows = [("u1", f"i{k}", k) for k in range(6)] + [("u2", f"i{k}", 10 - k) for k in range(6)]
    rows += [("u2", "rare", 99), ("u3", "i1", 1)]
    data.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    kept = prepare_split(data, "csv", tmp_path / "out", min_item_count=2, min_user_count=5)
    assert kept.users.ids == ("u1", "u2")  # u3 has one action; "rare" was dropped
    assert "rare" not in kept.items.ids
    split = read_split(tmp_path / "out" / "test")
    assert external(split.train)["u2"] == ["i5", "i4", "i3", "i2", "i1"]
    assert external(split.test)["u2"] == ["i0"]
    with pytest.raises(DataFormatError, match="no user keeps 50 actions"):
        prepare_split(data, "csv", tmp_path / "none", min_item_count=1, min_user_count=50)
