"""The pyarrow readers (training.arrow_readers): CSV read by pyarrow gives exactly what the
line-by-line `read_csv` gives, or hands the file back to it (which then names the bad line);
Parquet follows the same rules, with one-line errors that name the file."""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.arrow_readers import PYTHON_WHITESPACE, read_csv_arrow, read_parquet
from training.dataset import Sequences
from training.readers import DataFormatError, read_csv, read_interactions


def same(a: Sequences, b: Sequences) -> bool:
    return a.users == b.users and a.items == b.items and a.fingerprint() == b.fingerprint()


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def generated_log(rows: int = 3000, seed: int = 0) -> dict[str, list[str]]:
    """Ids like a shop's (hex user ids, SKU-like items), times with many ties, out of order."""
    rng = np.random.default_rng(seed)
    return {
        "user": [f"{u:08x}" for u in rng.integers(0, 150, rows) * 2654435761 % 2**32],
        "item": [f"SKU-{i:05d}" for i in rng.zipf(1.3, rows) % 400],
        "timestamp": [str(t) for t in rng.integers(1_700_000_000, 1_700_000_050, rows)],
    }


def csv_text(log: dict[str, list[str]], delimiter: str = ",", newline: str = "\n") -> str:
    names = list(log)
    lines = [delimiter.join(names)] + [
        delimiter.join(values) for values in zip(*log.values(), strict=True)
    ]
    return newline.join(lines) + newline


@pytest.mark.parametrize("delimiter", [",", "\t", ";", "|"])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_csv_equals_the_line_by_line_reader(tmp_path: Path, delimiter: str, newline: str) -> None:
    path = write(tmp_path / "log.csv", csv_text(generated_log(), delimiter, newline))
    fast = read_csv_arrow(path)
    assert fast is not None
    assert same(fast, read_csv(path))


@pytest.mark.parametrize(
    "times",
    [
        ["3.5", "1e3", "-2", ".5", "7.", "+4", "1" * 25 + ".25", "0.1", "2E-3", "-0"],  # numbers
        ["3", "nan", "1_000", "inf", "-Infinity", "2", "١٢", "5", "NaN", "1"],  # float() reads
        ["2024-03-02T10:00:00Z", "2024-03-01", "2024-03-01", "b", "10", "9", "", "é", "Z", "a"],
    ],
)
def test_csv_times_sort_as_read_csv_sorts_them(tmp_path: Path, times: list[str]) -> None:
    rows = [f"u{k % 3},i{k},{time}" for k, time in enumerate(times)]
    path = write(tmp_path / "log.csv", "user,item,timestamp\n" + "\n".join(rows) + "\n")
    fast = read_csv_arrow(path)
    assert fast is not None
    assert same(fast, read_csv(path))


def test_csv_variants_equal_the_line_by_line_reader(tmp_path: Path) -> None:
    cases = {
        # blank lines, surrounding (Unicode) whitespace, non-ASCII ids, extra columns
        "spaces.csv": "\n\nuser,item,timestamp,note\n a ,\u3000b\x85, 2 ,x\n\nzoë,café,1,y\n",
        "columns.csv": "note;timestamp;item;user\nq;5;x;u\nq;4;y;u\nq;4;z;v\n",
        "ties.csv": "user,item,timestamp\nu,c,1\nu,a,1\nu,b,0\nv,a,1\n",
        "quoted_header.csv": '"user","item","timestamp"\nu,c,1\nu,a,0\n',  # as pyarrow writes
    }
    for name, text in cases.items():
        path = write(tmp_path / name, text)
        fast = read_csv_arrow(path)
        assert fast is not None, name
        assert same(fast, read_csv(path)), name
    gz = tmp_path / "log.csv.gz"
    gz.write_bytes(gzip.compress(csv_text(generated_log(500)).encode()))
    assert same(read_csv_arrow(gz), read_csv(gz))
    quoted = tmp_path / "quoted.csv.gz"  # quoting, sought in the fields of a gzip'd file
    quoted.write_bytes(gzip.compress(b'user,item,timestamp\nu,"a,b",1\nu,c,0\n'))
    assert read_csv_arrow(quoted) is None
    assert same(read_interactions(quoted, "csv"), read_csv(quoted))
    spanning = write(tmp_path / "spanning.csv", '"us\ner",item,timestamp\nu,a,1\n')
    assert read_csv_arrow(spanning) is None  # a header over two lines: read_csv's to read
    path = write(tmp_path / "custom.csv", "who,what\nu,b\nu,a\nv,a\n")
    fast = read_csv_arrow(path, user_col="who", item_col="what", time_col=None)
    assert same(fast, read_csv(path, user_col="who", item_col="what", time_col=None))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user,item,timestamp\nu,a,1\nu,b\n", ":3: expected 3 fields, got 2"),
        ("user,item,timestamp\nu,a,1\nu,b,2,3\n", ":3: expected 3 fields, got 4"),
        ("user,item,timestamp\nu,a,1\n u ,  ,2\n", ":3: empty user or item id"),
        ("user,product,timestamp\nu,a,1\n", ":1: header lacks column(s) item"),
        ('user,item,timestamp\nu,a,1\nu,"b\nc",2\nv,d\n', ":5: expected 3 fields, got 2"),
        ("user,item,timestamp\nu,a,1\n   \nu,b,2\n", ":3: expected 3 fields, got 1"),
        (f"user,item,timestamp\nu,a,1\nu,{'x' * 200_000},2\n", ":3: field larger than"),
        ("user,item,timestamp\n", "no interactions found"),
    ],
)
def test_malformed_csv_is_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    assert read_csv_arrow(path) is None  # handed back to the line-by-line reader
    with pytest.raises(DataFormatError, match=re.escape(f"{path}") + ".*" + re.escape(message)):
        read_interactions(path, "csv")
    with pytest.raises(DataFormatError) as raised:
        read_interactions(path, "csv")
    assert "\n" not in str(raised.value)


def test_csv_that_is_not_utf8_or_has_a_bom_goes_line_by_line(tmp_path: Path) -> None:
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"user,item,timestamp\nu,a,1\nu,\xed\xa0\x80,2\n")  # a surrogate
    assert read_csv_arrow(binary) is None
    with pytest.raises(DataFormatError, match=re.escape(f"{binary}: not UTF-8")):
        read_interactions(binary, "csv")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfuser,item,timestamp\nu,a,1\n")
    assert read_csv_arrow(bom) is None
    with pytest.raises(DataFormatError, match="header lacks column"):
        read_interactions(bom, "csv")


def test_read_interactions_csv_uses_the_arrow_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "log.csv", csv_text(generated_log(200)))
    expected = read_csv(path)

    def refuse(*_args, **_kwargs):
        raise AssertionError("the line-by-line reader ran")

    monkeypatch.setattr("training.readers.read_csv", refuse)
    assert same(read_interactions(path, "csv"), expected)


# Mostly plain characters, so that many files read; now and then what makes them differ.
CHARACTERS = [*"abcxyz0123456789" * 20, *".e- \t\"'\u3000\x1c\x00\x85\xa0é,;|\r\n\ufeff"]
FIELD = st.lists(st.sampled_from([*CHARACTERS, "nan", "1_0", "1e3", "-0", "2024-01-0"]), max_size=4)
HEADERS = ("user,item,timestamp", "timestamp,item,user,x", "user,item,timestamp,user")


@st.composite
def csv_files(draw: st.DrawFn) -> str:
    header = draw(st.sampled_from(HEADERS)).split(",")
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    fields = FIELD.map("".join)
    rows = draw(st.lists(st.lists(fields, min_size=len(header), max_size=len(header)), max_size=8))
    before = draw(st.sampled_from(["", "", "\n", " \n"]))
    lines = [delimiter.join(header)] + [delimiter.join(row) for row in rows]
    return before + newline.join(lines) + newline


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=csv_files())
def test_fuzz_csv_reads_as_the_line_by_line_reader(tmp_path: Path, text: str) -> None:
    """Any small file: `--format csv` gives read_csv's result, or read_csv's error (measured
    outside the suite: 5,000 files, 2,662 read by pyarrow, all equal)."""
    path = write(tmp_path / "fuzz.csv", text)
    try:
        expected: Sequences | str = read_csv(path)
    except DataFormatError as error:
        expected = str(error)
    try:
        got: Sequences | str = read_interactions(path, "csv")
    except DataFormatError as error:
        got = str(error)
    if isinstance(expected, str):
        assert got == expected
    else:
        assert not isinstance(got, str)
        assert same(got, expected)


def test_python_whitespace_is_what_str_strip_strips() -> None:
    assert set(PYTHON_WHITESPACE) == {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()}


def test_parquet_equals_the_csv_of_the_same_log(tmp_path: Path) -> None:
    log = generated_log()
    csv_path = write(tmp_path / "log.csv", csv_text(log))
    table = pa.table(
        {
            "user": pa.array(log["user"]).dictionary_encode(),
            "item": log["item"],
            "timestamp": pa.array([int(t) for t in log["timestamp"]], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=700)  # several row groups
    assert same(read_parquet(tmp_path / "log.parquet"), read_csv(csv_path))
    assert same(read_interactions(tmp_path / "log.parquet", "parquet"), read_csv(csv_path))
    seconds = pa.array([int(t) for t in log["timestamp"]], pa.int64()).cast(pa.timestamp("s"))
    pq.write_table(table.set_column(2, "timestamp", seconds), tmp_path / "times.parquet")
    assert same(read_parquet(tmp_path / "times.parquet"), read_csv(csv_path))
    texts = table.set_column(2, "timestamp", pa.array(log["timestamp"]))
    pq.write_table(texts, tmp_path / "texts.parquet")
    assert same(read_parquet(tmp_path / "texts.parquet"), read_csv(csv_path))


def test_parquet_integer_ids_read_as_their_decimal_text(tmp_path: Path) -> None:
    table = pa.table({"user": [7, 3, 7], "item": [10, 20, 30], "timestamp": [3.0, 1.0, 2.0]})
    pq.write_table(table, tmp_path / "ints.parquet")
    seqs = read_parquet(tmp_path / "ints.parquet")
    assert seqs.users.ids == ("7", "3")
    assert seqs.items.ids == ("10", "20", "30")
    assert [s.tolist() for s in seqs.sequences] == [[3, 1], [2]]


def columns(user=("u", "v"), item=("a", "b"), timestamp=(1, 2)) -> pa.Table:
    return pa.table({"user": list(user), "item": list(item), "timestamp": list(timestamp)})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (columns().drop_columns("item"), "lacks column(s) item (found: user, timestamp)"),
        (columns(user=("u", None)), "row 2: empty user or item id"),
        (columns(item=("a", " ")), "row 2: empty user or item id"),
        (columns(timestamp=(1, None)), "row 2: no timestamp"),
        (columns(user=(1.5, 2.5)), "column user holds double"),
        (columns().slice(0, 0), "no interactions found"),
    ],
)
def test_bad_parquet_is_one_line_naming_the_file(
    tmp_path: Path, table: pa.Table, message: str
) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: {message}")):
        read_interactions(path, "parquet")


def test_a_file_that_is_not_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "log.parquet", "user,item,timestamp\nu,a,1\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: not readable as Parquet")) as e:
        read_interactions(path, "parquet")
    assert "\n" not in str(e.value)
    with pytest.raises(DataFormatError, match="cannot read"):
        read_interactions(tmp_path / "absent.parquet", "parquet")
