"""Interaction logs read through pyarrow, column by column in C instead of line by line in
Python: Parquet (`--format parquet`), and CSV wherever pyarrow gives exactly what
`training.readers.read_csv` gives (`--format csv` tries this reader first).

The rules are the readers' (`training.readers`): users and items are indexed in order of first
appearance, each user's actions are sorted by time stably (equal times keep their file order),
ids lose surrounding whitespace (as `str.strip` removes it), and times that all read as numbers
sort numerically, otherwise as text. Errors are one line naming the file.

CSV: `read_csv_arrow` returns None, and `read_csv` then reads the file line by line (naming the
bad line where there is one), wherever the two could differ or the file is malformed: a quote
character anywhere, a row with another number of fields, an empty id, text that is not UTF-8,
a field beyond `csv.field_size_limit()`, anything but empty lines before the header, a header
beyond the first MiB, over several lines or without the wanted columns, times holding NUL. (The
header alone may quote its names, as pyarrow and pandas write them.)

Parquet: ids are strings or integers (or dictionaries of them); times are numbers, timestamps,
dates (all sorted exactly) or strings (as in CSV). A missing or empty id or a missing time is
an error naming the row (1-based, in file order).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import itertools
import mmap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from contract.ids import Vocabulary
from training.csv_dialect import sniff_dialect
from training.data_errors import DataFormatError
from training.dataset import Sequences

# What str.strip() strips: the characters for which str.isspace() holds.
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
ASCII_WHITESPACE = "".join(c for c in PYTHON_WHITESPACE if c.isascii())
# Numbers that float() and pyarrow both read, each to the same correctly rounded double; other
# texts go through float() itself.
PLAIN_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
HEAD_BYTES = 1 << 20  # where the CSV header must end
_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
_LINE_ENDS = ("\n", "\r", "\r\n")


def read_csv_arrow(
    path: str | Path,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str | None = "timestamp",
) -> Sequences | None:
    """What `training.readers.read_csv` returns for this file, read by pyarrow; None where
    pyarrow might read it otherwise, or it is malformed (see the module docstring)."""
    path = Path(path)
    try:
        compressed = _is_gzip(path)
        with gzip.open(path, "rb") if compressed else path.open("rb") as raw:
            head = raw.read(HEAD_BYTES)
    except (OSError, EOFError):
        return None  # read_csv names the problem
    found = _header_line(head, complete=len(head) < HEAD_BYTES)
    if found is None:
        return None
    header_text, data_start = found
    if head[data_start : data_start + 3] == _UTF8_BOM:
        return None  # pyarrow would drop a byte-order mark at the start of the data
    dialect = _dialect(header_text)
    header = next(csv.reader([header_text], dialect))
    if any("\n" in name or "\r" in name for name in header):
        return None  # a quoted name runs on past the line end: the header spans lines
    wanted = [user_col, item_col] + ([time_col] if time_col is not None else [])
    if any(name not in header for name in wanted):
        return None
    names = [f"f{k}" for k in range(len(header))]
    # Quote characters make the csv module read quoting (pyarrow here reads none), and numpy,
    # which read_csv sorts text times with, ignores trailing NULs. Sought in the bytes of an
    # uncompressed file (fast), else in the fields.
    avoided = {'"', dialect.quotechar, "\x00"} - {None}
    if not compressed and _holds_any(path, data_start, avoided):
        return None
    try:
        with _data(path, compressed, data_start) as data:
            table = pacsv.read_csv(
                data,
                read_options=pacsv.ReadOptions(column_names=names),
                parse_options=pacsv.ParseOptions(
                    delimiter=dialect.delimiter,
                    quote_char=False,
                    double_quote=False,
                    escape_char=False,
                    newlines_in_values=False,
                    ignore_empty_lines=True,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.large_string()),
                    strings_can_be_null=False,
                    check_utf8=True,
                ),
            )
    except (pa.ArrowException, OSError, EOFError, ValueError):
        return None  # a row with other fields, invalid UTF-8, corrupt gzip data...
    if table.num_rows == 0 or not _plain_fields(table, avoided if compressed else set()):
        return None
    columns = [_strip(table.column(names[header.index(name)])) for name in wanted]
    users, items = columns[0], columns[1]
    if pc.any(pc.equal(users, "")).as_py() or pc.any(pc.equal(items, "")).as_py():
        return None
    keys = None if time_col is None else _time_keys(columns[2])
    return _sequences(users, items, keys)


def read_parquet(
    path: str | Path,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str | None = "timestamp",
) -> Sequences:
    """A Parquet file (or directory of them) with user, item and time columns; with
    `time_col=None` the file order is the time order."""
    wanted = [user_col, item_col] + ([time_col] if time_col is not None else [])
    try:
        schema = pq.read_schema(path) if not Path(path).is_dir() else None
        table = pq.read_table(path, columns=None if schema is None else _present(schema, wanted))
    except FileNotFoundError as error:
        raise DataFormatError(f"{path}: cannot read ({error.strerror or error})") from error
    except (pa.ArrowException, OSError) as error:
        raise DataFormatError(f"{path}: not readable as Parquet ({_first_line(error)})") from error
    missing = [name for name in wanted if name not in table.column_names]
    if missing:
        raise DataFormatError(
            f"{path}: lacks column(s) {', '.join(missing)} (found: {', '.join(table.column_names)})"
        )
    if table.num_rows == 0:
        raise DataFormatError(f"{path}: no interactions found")
    users = _parquet_ids(path, table.column(user_col), user_col)
    items = _parquet_ids(path, table.column(item_col), item_col)
    empty = pc.or_(pc.equal(users, ""), pc.equal(items, "")).fill_null(True)
    if pc.any(empty).as_py():
        row = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
        raise DataFormatError(f"{path}: row {row + 1}: empty user or item id")
    keys = None if time_col is None else _parquet_time_keys(path, table.column(time_col))
    return _sequences(users, items, keys)


def _present(schema: pa.Schema, wanted: list[str]) -> list[str]:
    """The wanted columns the file has (read_parquet reports the others)."""
    return [name for name in wanted if name in schema.names]


def _is_gzip(path: Path) -> bool:
    """Decided by the first bytes, as readers.open_text decides it."""
    with path.open("rb") as raw:
        return raw.read(2) == _GZIP_MAGIC


@contextlib.contextmanager
def _data(path: Path, compressed: bool, start: int) -> Iterator[pa.NativeFile]:
    """The file's bytes from `start` on (gunzipped by Python's gzip, as read_csv reads them)."""
    if compressed:
        with gzip.open(path, "rb") as raw:
            raw.seek(start)
            yield pa.PythonFile(raw, mode="r")
    else:
        with pa.OSFile(str(path)) as data:
            data.seek(start)
            yield data


def _holds_any(path: Path, start: int, characters: set[str]) -> bool:
    """Whether the file's bytes from `start` on hold any of `characters` (memchr speed)."""
    try:
        with path.open("rb") as raw, mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return any(data.find(character.encode(), start) >= 0 for character in characters)
    except (OSError, ValueError):
        return True


def _header_line(head: bytes, complete: bool) -> tuple[str, int] | None:
    """The first non-blank line of `head` (decoded, with its line end) and the byte offset
    after it, as read_csv finds its header; None where only empty lines may come before it
    (read_csv's csv reader makes a row of any other), or it does not end within `head`."""
    position = 0
    while True:
        ends = [end for end in (head.find(b"\n", position), head.find(b"\r", position)) if end >= 0]
        if not ends:
            return None  # no line end: at most a header, and no data
        end = min(ends) + 1
        if head[end - 1 : end] == b"\r":
            if end == len(head) and not complete:
                return None  # a "\r\n" might straddle the end of `head`
            end += head[end : end + 1] == b"\n"
        try:
            text = head[position:end].decode("utf-8")
        except UnicodeDecodeError:
            return None
        if text.strip():
            return text, end
        if text not in _LINE_ENDS:
            return None
        position = end


def _dialect(header_line: str) -> csv.Dialect | type[csv.Dialect]:
    sniffed = sniff_dialect(header_line)  # as read_csv sniffs it
    return csv.get_dialect(sniffed) if isinstance(sniffed, str) else sniffed


def _plain_fields(table: pa.Table, avoided: set[str]) -> bool:
    """No field holds one of the `avoided` characters or is longer than the csv module reads."""
    limit = csv.field_size_limit()
    for column in table.columns:
        longest = pc.max(pc.binary_length(column)).as_py()
        if longest is not None and longest >= limit:
            return False
        if any(pc.any(pc.match_substring(column, character)).as_py() for character in avoided):
            return False
    return True


def _strip(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """As str.strip() strips every value (ASCII-only columns, the common case, faster)."""
    if pc.all(pc.string_is_ascii(column)).as_py():
        return pc.ascii_trim(column, characters=ASCII_WHITESPACE)
    return pc.utf8_trim(column, characters=PYTHON_WHITESPACE)


def _time_keys(times: pa.ChunkedArray) -> np.ndarray:
    """Sort keys of stripped time texts: their numbers (float64) if every text reads as one
    (as float() reads it), else their rank in text (code point) order."""
    if pc.all(pc.ascii_is_decimal(times)).as_py():  # digits only, the common case: fast
        return pc.cast(times, pa.float64()).to_numpy()
    plain = pc.match_substring_regex(times, PLAIN_NUMBER)
    if pc.all(plain).as_py():
        return pc.cast(times, pa.float64()).to_numpy()
    others = pc.filter(times, pc.invert(plain))
    try:
        float(others[0].as_py())  # a text that is no number: times are text (read fast)
        numbers = [float(text) for text in others.to_pylist()]
    except ValueError:
        ranks = pc.rank(times.combine_chunks(), sort_keys="ascending", tiebreaker="dense")
        return ranks.to_numpy()
    keys = pc.cast(pc.if_else(plain, times, "0"), pa.float64()).to_numpy().copy()
    keys[~plain.to_numpy()] = numbers
    return keys


def _parquet_ids(path: str | Path, column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    accepted = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer)
    if not any(test(kind) for test in (*accepted, pa.types.is_binary, pa.types.is_large_binary)):
        raise DataFormatError(
            f"{path}: column {name} holds {column.type}, not ids (strings or integers)"
        )
    try:
        return _strip(pc.cast(column, pa.large_string()))
    except pa.ArrowInvalid as error:  # binary that is not UTF-8
        raise DataFormatError(f"{path}: column {name}: {_first_line(error)}") from error


def _parquet_time_keys(path: str | Path, times: pa.ChunkedArray) -> np.ndarray:
    if times.null_count:
        row = int(np.flatnonzero(pc.is_null(times).to_numpy(zero_copy_only=False))[0])
        raise DataFormatError(f"{path}: row {row + 1}: no timestamp")
    kind = times.type
    if pa.types.is_dictionary(kind):
        times, kind = times.cast(kind.value_type), kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _time_keys(_strip(pc.cast(times, pa.large_string())))
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return times.to_numpy()
    if pa.types.is_decimal(kind):
        return pc.cast(times, pa.float64()).to_numpy()
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_duration(kind):
        return pc.cast(times, pa.int64()).to_numpy()
    raise DataFormatError(f"{path}: the time column holds {kind}, not times")


def _first_appearance(column: pa.ChunkedArray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each value's index (0-based) in order of first appearance, and the values in that order."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    return encoded.indices.to_numpy().astype(np.int64), tuple(encoded.dictionary.to_pylist())


def _sequences(
    users: pa.ChunkedArray, items: pa.ChunkedArray, keys: np.ndarray | None
) -> Sequences:
    """As readers._LogBuilder builds them: each user's items in (stable) time order."""
    user_codes, user_ids = _first_appearance(users)
    item_codes, item_ids = _first_appearance(items)
    if keys is None:  # file order
        order = np.argsort(user_codes, kind="stable")
    else:
        order = np.lexsort((keys, user_codes))
    user_codes, item_codes = user_codes[order], item_codes[order] + 1  # index 0 is padding
    del order, keys
    bounds = np.searchsorted(user_codes, np.arange(len(user_ids) + 1))
    sequences = tuple(item_codes[start:stop].copy() for start, stop in itertools.pairwise(bounds))
    return Sequences(Vocabulary(user_ids), Vocabulary(item_ids), sequences)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = ["PLAIN_NUMBER", "PYTHON_WHITESPACE", "read_csv_arrow", "read_parquet"]
