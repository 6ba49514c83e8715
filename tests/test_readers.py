"""Readers: every format, id mapping in order of first appearance, stable time order, and
errors that name the file and line."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from training.dataset import Sequences
from training.readers import (
    DataFormatError,
    read_caser,
    read_csv,
    read_interactions,
    read_movielens,
    read_sequences,
)


def external(seqs: Sequences) -> dict[str, list[str]]:
    """Each user's items as external ids, oldest first."""
    return {
        user: [seqs.items.external(int(i)) for i in seq]
        for user, seq in zip(seqs.users.ids, seqs.sequences, strict=True)
    }


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_caser_maps_ids_in_order_of_first_appearance(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "7 a 1\n7 b 1\n3 b 1\n7 c 1\n\n3 a 1\n")
    seqs = read_caser(path)
    assert seqs.users.ids == ("7", "3")
    assert seqs.items.ids == ("a", "b", "c")
    assert [s.tolist() for s in seqs.sequences] == [[1, 2, 3], [2, 1]]
    assert all(s.dtype.name == "int64" for s in seqs.sequences)


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "train.txt.gz"
    path.write_bytes(gzip.compress(b"u1 x 1\nu1 y 1\n"))
    assert external(read_caser(path)) == {"u1": ["x", "y"]}


def test_caser_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "data.txt", "1 a 1\n1 b 1\n2 c\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:3: expected 3 fields, got 2")):
        read_caser(path)


def test_sequences_one_line_per_user(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "10 5 6 7\n20 6 8\n")
    seqs = read_sequences(path)
    assert external(seqs) == {"10": ["5", "6", "7"], "20": ["6", "8"]}
    assert seqs.items.ids == ("5", "6", "7", "8")


def test_sequences_user_without_items_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "10 5 6 7\n20\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2:")):
        read_sequences(path)


def test_movielens_orders_by_time_stably(tmp_path: Path) -> None:
    # User 1's ratings out of time order, with a tie at time 50 kept in file order.
    path = write(
        tmp_path / "ratings.dat",
        "1::30::5::100\n1::10::3::50\n2::10::4::7\n1::20::4::50\n1::40::1::20\n",
    )
    seqs = read_movielens(path)
    assert external(seqs) == {"1": ["40", "10", "20", "30"], "2": ["10"]}
    # Item indices follow first appearance in the file, not in time order.
    assert seqs.items.ids == ("30", "10", "20", "40")


@pytest.mark.parametrize(
    ("line", "message"),
    [("1::30::5", "expected 4 '::'-separated fields, got 3"), ("1::30::5::noon", "not a number")],
)
def test_movielens_malformed_lines(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "ratings.dat", f"1::10::3::50\n{line}\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2:") + ".*" + message):
        read_movielens(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1::30::5::60::", "expected 4 '::'-separated fields, got 5"),
        ("::1::30::60", "empty user or item id"),
        ("1::::30::60", "empty user or item id"),
    ],
)
def test_movielens_empty_fields_are_errors(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "ratings.dat", f"1::10::3::50\n{line}\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: {message}")):
        read_movielens(path)


def test_csv_with_header_sorts_numeric_times(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log.csv",
        "timestamp,user,item,extra\n9,alice,x,q\n10,alice,y,q\n2,bob,x,q\n1,alice,z,q\n",
    )
    # Numeric, not text, order: 9 < 10.
    assert external(read_csv(path)) == {"alice": ["z", "x", "y"], "bob": ["x"]}


def test_tsv_and_custom_columns_and_iso_times(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log.tsv",
        "uid\tsku\twhen\n"
        "a\tp1\t2024-03-02T10:00:00Z\n"
        "a\tp2\t2024-03-01T10:00:00Z\n"
        "b\tp1\t2024-01-01T00:00:00Z\n",
    )
    seqs = read_csv(path, user_col="uid", item_col="sku", time_col="when")
    assert external(seqs) == {"a": ["p2", "p1"], "b": ["p1"]}


def test_csv_without_time_column_keeps_file_order(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user;item\nu;b\nu;a\n")
    assert external(read_csv(path, time_col=None)) == {"u": ["b", "a"]}


def test_csv_missing_column_names_header_line(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,product,timestamp\nu,a,1\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:1: header lacks column(s) item")):
        read_csv(path)


def test_csv_short_row_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", "user,item,timestamp\n\nu,a,1\nu,b\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:4: expected 3 fields, got 2")):
        read_csv(path)


def test_csv_empty_id_and_unparsable_field_name_their_line(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", "user,item,timestamp\nu,a,1\n u ,  ,2\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:3: empty user or item id")):
        read_csv(path)
    huge_field = "x" * 200_000  # beyond the csv module's field size limit
    path = write(tmp_path / "huge.csv", f"user,item,timestamp\nu,a,1\nu,{huge_field},2\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:3:")):
        read_csv(path)


def test_dispatch_and_unknown_format(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "1 2 3\n")
    assert external(read_interactions(path, "sequences")) == {"1": ["2", "3"]}
    with pytest.raises(ValueError, match="unknown data format"):
        read_interactions(path, "xml")


def test_missing_empty_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="cannot read"):
        read_caser(tmp_path / "absent.txt")
    with pytest.raises(DataFormatError, match="no interactions"):
        read_caser(write(tmp_path / "empty.txt", "\n\n"))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"1 \xff\xfe 1\n")
    with pytest.raises(DataFormatError, match="not UTF-8"):
        read_caser(binary)


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_windows_and_old_mac_line_endings(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "train.txt"
    path.write_bytes(newline.join(["1 a 1", "1 b 1", "2 a 1", ""]).encode())
    assert external(read_caser(path)) == {"1": ["a", "b"], "2": ["a"]}
    path.write_bytes(newline.join(["1 a 1", "1 b", ""]).encode())
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: expected 3 fields, got 2")):
        read_caser(path)


def test_non_ascii_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "zoë café naïve\nbjörk café\n")
    assert external(read_sequences(path)) == {"zoë": ["café", "naïve"], "björk": ["café"]}


def test_whole_file_and_line_by_line_reading_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    caser = write(tmp_path / "train.txt", "".join(f"u{k % 7} i{k % 11} 1\n" for k in range(200)))
    sequences = write(
        tmp_path / "seq.txt",
        "".join(
            f"u{k} " + " ".join(f"i{k * j % 13}" for j in range(1, 9)) + "\n" for k in range(30)
        ),
    )
    ratings = write(
        tmp_path / "ratings.dat", "".join(f"{k % 5}::{k % 9}::3::{k % 4}\n" for k in range(100))
    )
    fast = (read_caser(caser), read_sequences(sequences), read_movielens(ratings))
    # Force the line-by-line reader, which the whole-file one must match exactly.
    monkeypatch.setattr("training.readers._fields_by_line", lambda *_args, **_kwargs: None)
    slow = (read_caser(caser), read_sequences(sequences), read_movielens(ratings))
    for quick, exact in zip(fast, slow, strict=True):
        assert quick.users == exact.users
        assert quick.items == exact.items
        assert quick.fingerprint() == exact.fingerprint()
