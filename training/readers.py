"""Readers that turn interaction logs into `Sequences`.

Every reader maps external ids (arbitrary strings) to contiguous indices in order of first
appearance in the file (users and items separately), as the reference Caser/CosRec code does,
and keeps the mapping in the returned vocabularies. Each user's actions are ordered by time
with a stable sort, so actions with equal times keep their file order. Files may be gzip'd.
A malformed line raises `DataFormatError` naming the file and the line number.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import operator
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from contract.ids import Vocabulary
from training.csv_dialect import sniff_dialect
from training.data_errors import DataFormatError
from training.dataset import Sequences

# "parquet", and "csv" where it can, are read by pyarrow (training.arrow_readers).
FORMATS = ("caser", "sequences", "movielens", "csv", "parquet", "redis")
_GZIP_MAGIC = b"\x1f\x8b"
# What str.split() splits ASCII text at, besides newlines, as a look-up table by byte.
_IS_ASCII_SPACE = np.zeros(256, dtype=bool)
_IS_ASCII_SPACE[list(b" \t\r\x0b\x0c\x1c\x1d\x1e\x1f")] = True


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a text file for reading, gzip'd or not (decided by its first bytes, not its name)."""
    path = Path(path)
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
    except OSError as error:
        raise DataFormatError(f"{path}: cannot read ({error.strerror or error})") from error
    if compressed:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


@contextlib.contextmanager
def _as_data_errors(path: str | Path) -> Iterator[None]:
    """Undecodable text or a broken gzip stream become a `DataFormatError` naming the file."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text ({error.reason})") from error
    except (EOFError, gzip.BadGzipFile) as error:
        raise DataFormatError(f"{path}: corrupt gzip data ({error})") from error


def _numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) for every non-blank line."""
    with _as_data_errors(path), open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


def _fields_by_line(
    path: str | Path, separator: str | None = None
) -> tuple[list[str], np.ndarray] | None:
    """Every field of the file, and how many each line holds.

    Whole-file work in C and numpy, several times faster than reading line by line. Lines are
    split at `\\n` and fields at runs of ASCII whitespace, or at `separator` where one is given
    (a file whose fields then hold whitespace is left to the line-by-line reader). None where
    the file holds other line or field separators (a bare `\\r`, Unicode spaces), for the
    line-by-line reader to handle.
    """
    with _as_data_errors(path), open_text(path) as handle:
        text = handle.read()
    if not text.isascii() or text.count("\r") != text.count("\r\n"):
        return None
    if separator is not None:
        # Whitespace inside fields, or an empty field, would be counted differently.
        suspicious = (*" \t\x0b\x0c\x1c\x1d\x1e\x1f", separator * 2, "\n" + separator)
        if any(part in text for part in suspicious) or text.startswith(separator):
            return None
        if any(part in text for part in (separator + "\n", separator + "\r")):
            return None
        if text.endswith(separator):
            return None
        text = text.replace(separator, " ")
    fields = text.split()
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    newline = codes == ord("\n")
    is_separator = newline | _IS_ASCII_SPACE[codes]
    field_starts = np.flatnonzero(~is_separator & np.concatenate([[True], is_separator[:-1]]))
    # A field's line is the number of newlines before it.
    line_of_field = np.searchsorted(np.flatnonzero(newline), field_starts)
    per_line = np.bincount(line_of_field, minlength=int(newline.sum()) + 1)
    if len(field_starts) != len(fields):
        return None
    return fields, per_line


class _LogBuilder:
    """Collects (user, item, time) actions and orders them into `Sequences`."""

    def __init__(self) -> None:
        self._user_index: dict[str, int] = {}
        self._item_index: dict[str, int] = {}
        self._users: list[int] = []
        self._items: list[int] = []
        self._times: list = []

    def add_user(self, user: str) -> None:
        self._user_index.setdefault(user, len(self._user_index))

    def add(self, user: str, item: str, time: float | str | int = 0) -> None:
        self._users.append(self._user_index.setdefault(user, len(self._user_index)))
        self._items.append(self._item_index.setdefault(item, len(self._item_index)))
        self._times.append(time)

    def add_many(
        self, users: Sequence[str], items: Sequence[str], times: Sequence | int = 0
    ) -> None:
        """Many actions at once, in file order (dict look-ups run in C, not per Python line);
        `times` is one time for all or one per action."""
        for user in dict.fromkeys(users):
            self.add_user(user)
        for item in dict.fromkeys(items):
            self._item_index.setdefault(item, len(self._item_index))
        self._users.extend(map(self._user_index.__getitem__, users))
        self._items.extend(map(self._item_index.__getitem__, items))
        self._times.extend(itertools.repeat(times, len(users)) if isinstance(times, int) else times)

    def build(self, path: str | Path) -> Sequences:
        return self.build_parts(path, num_parts=1)[0]

    def build_parts(self, path: str | Path, num_parts: int) -> tuple[Sequences, ...]:
        """One `Sequences` per part over shared vocabularies; the part of an action is the
        time it was added with (0 .. num_parts - 1)."""
        if not self._users:
            raise DataFormatError(f"{path}: no interactions found")
        users = np.asarray(self._users, dtype=np.int64)
        items = np.asarray(self._items, dtype=np.int64) + 1  # index 0 is padding
        times = np.asarray(self._times)
        # lexsort is stable: by user, then time, ties in file order.
        order = np.lexsort((times, users))
        users, items, times = users[order], items[order], times[order]
        user_vocabulary = Vocabulary(tuple(self._user_index))
        item_vocabulary = Vocabulary(tuple(self._item_index))
        parts = []
        for part in range(num_parts):
            in_part = times == part if num_parts > 1 else np.ones(len(users), dtype=bool)
            part_users, part_items = users[in_part], items[in_part]
            bounds = np.searchsorted(part_users, np.arange(len(user_vocabulary) + 1))
            sequences = tuple(
                part_items[start:stop].copy() for start, stop in itertools.pairwise(bounds)
            )
            parts.append(Sequences(user_vocabulary, item_vocabulary, sequences))
        return tuple(parts)


def _parse_time(path: str | Path, number: int, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(f"{path}:{number}: timestamp {text!r} is not a number") from None


def read_caser(path: str | Path) -> Sequences:
    """The Caser format: `user item rating` per line, each user's lines in time order."""
    return read_caser_files([path])[0]


def read_caser_files(paths: Sequence[str | Path]) -> tuple[Sequences, ...]:
    """Several Caser files (a train and a test part) over one vocabulary built across all of
    them in the order given, as the reference does; one `Sequences` per file."""
    builder = _LogBuilder()
    for part, path in enumerate(paths):
        fast = _fields_by_line(path)
        if fast is not None and np.isin(fast[1], (0, 3)).all():
            fields = fast[0]
            builder.add_many(fields[0::3], fields[1::3], part)
            continue
        for number, line in _numbered_lines(path):  # exact, and names the bad line
            fields = line.split()
            if len(fields) != 3:
                raise DataFormatError(f"{path}:{number}: expected 3 fields, got {len(fields)}")
            builder.add(fields[0], fields[1], part)
    return builder.build_parts(paths[0], num_parts=len(paths))


def read_sequences(path: str | Path) -> Sequences:
    """One line per user, `user item item ...`, oldest first (a user on several lines: joined)."""
    builder = _LogBuilder()
    fast = _fields_by_line(path)
    if fast is not None and (fast[1] != 1).all():
        fields, per_line = np.asarray(fast[0], dtype=object), fast[1][fast[1] > 0]
        first_field = np.cumsum(per_line) - per_line
        is_item = np.ones(len(fields), dtype=bool)
        is_item[first_field] = False
        builder.add_many(
            np.repeat(fields[first_field], per_line - 1).tolist(), fields[is_item].tolist()
        )
        return builder.build(path)
    for number, line in _numbered_lines(path):  # exact, and names the bad line
        user, *items = line.split()
        if not items:
            raise DataFormatError(f"{path}:{number}: expected a user id and at least one item")
        builder.add_user(user)
        for item in items:
            builder.add(user, item)
    return builder.build(path)


def read_movielens(path: str | Path) -> Sequences:
    """MovieLens `ratings.dat`: `UserID::MovieID::Rating::Timestamp`; every rating is an action."""
    builder = _LogBuilder()
    fast = _fields_by_line(path, separator="::")
    if fast is not None and np.isin(fast[1], (0, 4)).all():
        fields = fast[0]
        try:
            times = list(map(float, fields[3::4]))
        except ValueError:
            pass  # the line-by-line reader names the line
        else:
            builder.add_many(fields[0::4], fields[1::4], times)
            return builder.build(path)
    for number, line in _numbered_lines(path):  # exact, and names the bad line
        fields = [field.strip() for field in line.split("::")]
        if len(fields) != 4:
            raise DataFormatError(
                f"{path}:{number}: expected 4 '::'-separated fields, got {len(fields)}"
            )
        if not fields[0] or not fields[1]:
            raise DataFormatError(f"{path}:{number}: empty user or item id")
        builder.add(fields[0], fields[1], _parse_time(path, number, fields[3]))
    return builder.build(path)


def read_csv(
    path: str | Path,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str | None = "timestamp",
) -> Sequences:
    """A CSV/TSV file with a header row; the delimiter (`,` tab `;` `|`) is sniffed.

    Times must all be numbers (sorted numerically) or else are sorted as text, which orders
    ISO 8601 times correctly. With `time_col=None` the file order is the time order.
    """
    wanted = [user_col, item_col] + ([time_col] if time_col is not None else [])
    with _as_data_errors(path), open_text(path) as handle:
        lines = iter(handle)
        head: list[str] = []  # up to the header, the first non-blank line
        for line in lines:
            head.append(line)
            if line.strip():
                break
        else:
            raise DataFormatError(f"{path}: no interactions found")
        reader = csv.reader(itertools.chain(head, lines), sniff_dialect(head[-1]))
        header = next(row for row in reader if row)
        missing = [name for name in wanted if name not in header]
        if missing:
            raise DataFormatError(
                f"{path}:{reader.line_num}: header lacks column(s) {', '.join(missing)}"
                f" (found: {', '.join(header)})"
            )
        pick = operator.itemgetter(*(header.index(name) for name in wanted))
        picked: list[tuple[str, ...]] = []
        line_numbers: list[int] = []
        try:
            for row in reader:
                if len(row) != len(header):
                    if not row:
                        continue
                    raise DataFormatError(
                        f"{path}:{reader.line_num}: expected {len(header)} fields, got {len(row)}"
                    )
                picked.append(pick(row))
                line_numbers.append(reader.line_num)
        except csv.Error as error:  # e.g. a field beyond csv.field_size_limit()
            raise DataFormatError(f"{path}:{reader.line_num}: {error}") from error
    columns = [list(map(str.strip, column)) for column in zip(*picked, strict=True)]
    if not columns:
        raise DataFormatError(f"{path}: no interactions found")
    users, items = columns[0], columns[1]
    if "" in users or "" in items:
        row = min(i for i, pair in enumerate(zip(users, items, strict=True)) if not all(pair))
        raise DataFormatError(f"{path}:{line_numbers[row]}: empty user or item id")
    builder = _LogBuilder()
    builder.add_many(users, items, _csv_times(columns[2]) if time_col is not None else 0)
    return builder.build(path)


def _csv_times(texts: list[str]) -> list[float] | list[str]:
    try:
        return list(map(float, texts))
    except ValueError:
        return texts


def events_to_sequences(
    users: Sequence[str], items: Sequence[str], times: Sequence[float], source: str
) -> Sequences:
    """Actions given as three columns: each user's ordered by time (stably: equal times keep
    the given order), ids indexed in order of first appearance. `source` names them in errors."""
    builder = _LogBuilder()
    builder.add_many(users, items, list(times))
    return builder.build(source)


def read_redis_log(url: str | Path) -> Sequences:
    """The service's durable event log (every accepted event), read from the Redis at `url`.

    `redis://host:port/db` for one server, `redis+cluster://host:port` for a Redis Cluster.
    The key prefix is the service's default (`cosrec`).
    """
    import redis

    from contract.event_log import read_event_log_url

    url = str(url)
    cluster = url.startswith("redis+cluster://")
    if cluster:
        url = "redis://" + url.removeprefix("redis+cluster://")
    try:
        rows = read_event_log_url(url, cluster=cluster)
    except (redis.RedisError, ValueError) as error:
        raise DataFormatError(f"{url}: cannot read the event log: {error}") from error
    if not rows:
        raise DataFormatError(f"{url}: the event log holds no events")
    users, items, times = zip(*rows, strict=True)
    return events_to_sequences(users, items, times, url)


def read_interactions(path: str | Path, fmt: str) -> Sequences:
    """Dispatch on the format name: one of `FORMATS` (for "redis", `path` is a Redis URL)."""
    readers = {
        "caser": read_caser,
        "sequences": read_sequences,
        "movielens": read_movielens,
        "csv": _read_csv_log,
        "parquet": _read_parquet,
        "redis": read_redis_log,
    }
    if fmt not in readers:
        raise ValueError(f"unknown data format {fmt!r} (expected one of {', '.join(FORMATS)})")
    return readers[fmt](path)


def _read_csv_log(path: str | Path) -> Sequences:
    """`read_csv`'s result, read by pyarrow where that gives the same (training.arrow_readers)."""
    try:
        from training.arrow_readers import read_csv_arrow
    except ImportError:  # no pyarrow: the csv module alone
        return read_csv(path)
    fast = read_csv_arrow(path)
    return read_csv(path) if fast is None else fast


def _read_parquet(path: str | Path) -> Sequences:
    try:
        from training.arrow_readers import read_parquet
    except ImportError as error:
        raise DataFormatError(f"{path}: reading Parquet needs pyarrow ({error})") from error
    return read_parquet(path)
