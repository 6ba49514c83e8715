"""The paper's preprocessing and chronological splits, and the Caser split files.

A split directory, as the reference CosRec code and `cosrec split` lay it out:

    DIR/test/train.txt        first ceil(0.8 n) actions of each user
    DIR/test/test.txt         the rest
    DIR/validation/train.txt  first ceil(0.7 n) actions
    DIR/validation/test.txt   the next ceil(0.8 n) - ceil(0.7 n) actions

in the Caser format (`user item 1` per line, users in input order, oldest first; external ids).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from contract.ids import Vocabulary
from training.dataset import Sequences, Split
from training.readers import DataFormatError, read_caser_files, read_interactions

TEST_FRACTION = Fraction(4, 5)
VALIDATION_TRAIN_FRACTION = Fraction(7, 10)


def filter_min_count(
    seqs: Sequences, min_item_count: int = 5, min_user_count: int = 5
) -> Sequences:
    """Drop items with fewer than `min_item_count` actions, then users with fewer than
    `min_user_count` actions left.

    The paper discards "users and items with fewer than 5 actions" (ML-1M) without an order;
    this is one pass, items first, which reproduces the shared ML-1M split (all 6,040 users
    keep at least 5). It is not an iterated k-core: dropping a user can leave an item below
    the threshold. Repeated actions count each time. Kept items are re-indexed contiguously in
    their original order; kept users keep their order.
    """
    counts = seqs.item_counts()
    keep_item = counts >= min_item_count
    keep_item[0] = False
    new_index = np.cumsum(keep_item) * keep_item  # old index -> new index, 0 where dropped
    user_ids: list[str] = []
    sequences: list[np.ndarray] = []
    for user_id, seq in zip(seqs.users.ids, seqs.sequences, strict=True):
        kept = new_index[seq[keep_item[seq]]]
        if len(kept) >= min_user_count:
            user_ids.append(user_id)
            sequences.append(kept.astype(np.int64))
    item_ids = tuple(id_ for id_, keep in zip(seqs.items.ids, keep_item[1:], strict=True) if keep)
    return Sequences(
        users=Vocabulary(tuple(user_ids)),
        items=Vocabulary(item_ids),
        sequences=tuple(sequences),
    )


def _ceil_fraction(fraction: Fraction, n: int) -> int:
    """ceil(fraction * n) in exact integer arithmetic (0.55 * 100 is 55.00000000000001)."""
    return -((-fraction.numerator * n) // fraction.denominator)


def _as_fraction(value: float | Fraction) -> Fraction:
    # str() gives the shortest decimal that round-trips, so 0.8 becomes exactly 4/5.
    fraction = value if isinstance(value, Fraction) else Fraction(str(value))
    if not 0 <= fraction <= 1:
        raise ValueError(f"a split fraction must lie in [0, 1], got {value}")
    return fraction


def _cut(seqs: Sequences, first: Fraction, second: Fraction) -> Split:
    """train = positions [0, ceil(first n)), test = [ceil(first n), ceil(second n))."""
    train, test = [], []
    for seq in seqs.sequences:
        start = _ceil_fraction(first, len(seq))
        stop = _ceil_fraction(second, len(seq))
        train.append(seq[:start])
        test.append(seq[start:stop])
    return Split(
        train=Sequences(seqs.users, seqs.items, tuple(train)),
        test=Sequences(seqs.users, seqs.items, tuple(test)),
    )


def chronological_split(seqs: Sequences, fraction: float | Fraction = TEST_FRACTION) -> Split:
    """Each user's first ceil(fraction n) actions train, the rest test."""
    return _cut(seqs, _as_fraction(fraction), Fraction(1))


def validation_split(
    seqs: Sequences,
    train: float | Fraction = VALIDATION_TRAIN_FRACTION,
    valid: float | Fraction = TEST_FRACTION,
) -> Split:
    """First ceil(train n) actions train, the next ceil(valid n) - ceil(train n) test; the
    actions after that (the real test part) are left out."""
    train_fraction, valid_fraction = _as_fraction(train), _as_fraction(valid)
    if train_fraction > valid_fraction:
        raise ValueError("the validation train fraction must not exceed the valid fraction")
    return _cut(seqs, train_fraction, valid_fraction)


def caser_lines(seqs: Sequences) -> str:
    """The Caser text of `seqs`: `user item 1` per action, users in index order."""
    item_ids = np.array(("", *seqs.items.ids), dtype=object)  # index 0 is padding, never written
    chunks = []
    for user_id, seq in zip(seqs.users.ids, seqs.sequences, strict=True):
        if len(seq):
            # One join per user instead of one format per line: ~3x faster on ML-1M.
            chunks.append(f"{user_id} " + f" 1\n{user_id} ".join(item_ids[seq].tolist()) + " 1\n")
    return "".join(chunks)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # No name and mtime=0 keep the bytes reproducible (`gzip -n`), as in shared/data.
        with (
            path.open("wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        ):
            gz.write(text.encode())
    else:
        path.write_text(text, encoding="utf-8")


def write_caser(split_or_sequences: Split | Sequences, path: str | Path) -> None:
    """Write `Sequences` to the file `path`, or a `Split` as `path/train.txt` and
    `path/test.txt` (gzip'd when `path` ends in `.gz`, for a file)."""
    path = Path(path)
    if isinstance(split_or_sequences, Split):
        _write_text(path / "train.txt", caser_lines(split_or_sequences.train))
        _write_text(path / "test.txt", caser_lines(split_or_sequences.test))
    else:
        _write_text(path, caser_lines(split_or_sequences))


def _split_file(directory: Path, name: str) -> Path:
    for candidate in (directory / f"{name}.txt", directory / f"{name}.txt.gz"):
        if candidate.is_file():
            return candidate
    raise DataFormatError(f"{directory}: no {name}.txt or {name}.txt.gz")


def read_split(directory: str | Path) -> Split:
    """Read `DIR/train.txt[.gz]` and `DIR/test.txt[.gz]` over one vocabulary.

    The vocabulary is built over train then test, as the reference does, so items (or users)
    seen only in test still get an index; their train sequences are then empty.
    """
    directory = Path(directory)
    train, test = read_caser_files(
        [_split_file(directory, "train"), _split_file(directory, "test")]
    )
    return Split(train=train, test=test)


def write_split_dir(seqs: Sequences, out_dir: str | Path) -> None:
    """Write the paper's test split to `out_dir/test/` and its validation split to
    `out_dir/validation/`, each as `train.txt` and `test.txt`."""
    out_dir = Path(out_dir)
    write_caser(chronological_split(seqs), out_dir / "test")
    write_caser(validation_split(seqs), out_dir / "validation")


def prepare_split(
    data: str | Path,
    fmt: str,
    out_dir: str | Path,
    min_item_count: int = 5,
    min_user_count: int = 5,
) -> Sequences:
    """What `cosrec split` does: read a log, apply the minimum counts, write the split
    directory. Returns the filtered log (for the caller to report its size)."""
    seqs = filter_min_count(read_interactions(data, fmt), min_item_count, min_user_count)
    if seqs.num_users == 0:
        raise DataFormatError(
            f"{data}: no user keeps {min_user_count} actions after dropping items with fewer"
            f" than {min_item_count}"
        )
    write_split_dir(seqs, out_dir)
    return seqs


@dataclass(frozen=True)
class Splits:
    """The paper's two splits: `validation` (70% / next 10%) and `test` (80% / last 20%)."""

    validation: Split
    test: Split


def splits_of(seqs: Sequences) -> Splits:
    return Splits(validation=validation_split(seqs), test=chronological_split(seqs))


def load_splits(
    data: str | Path, fmt: str = "caser", min_item_count: int = 5, min_user_count: int = 5
) -> Splits:
    """A split directory (`DIR/validation/`, `DIR/test/`, as `cosrec split` writes them), or
    an interaction log (a file, or the service's Redis URL for "redis") that is filtered by the
    minimum counts and split here."""
    if fmt != "redis" and Path(data).is_dir():  # for "redis", `data` is a URL
        directory = Path(data)
        return Splits(read_split(directory / "validation"), read_split(directory / "test"))
    return splits_of(filter_min_count(read_interactions(data, fmt), min_item_count, min_user_count))
