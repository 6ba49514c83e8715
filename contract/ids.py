"""Indexing: external string ids to the model's indices, and a history to the model's input.

- items are indexed 1..num_items; index 0 is padding: never a real item, never scored. The
  model's score column `j` is item index `j + 1` (`score_column`);
- users are indexed 1..num_users; index 0 is the generic user, which serves every user who was
  not in training;
- `Vocabulary.ids[i - 1]` is the external id of index `i`.

`input_rows` is the only place a history becomes the network's input: offline evaluation, the
bundle scorer and the service all call it, so they always score the same input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat

import numpy as np

PADDING_INDEX = 0
GENERIC_USER_INDEX = 0
UNKNOWN_INDEX = 0  # what a lookup gives an id the vocabulary lacks (dropped by input_rows)


@dataclass(frozen=True)
class Vocabulary:
    """External string ids in index order; index 0 is reserved (padding / generic user)."""

    ids: tuple[str, ...]
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_positions", {id_: i + 1 for i, id_ in enumerate(self.ids)})
        if len(self._positions) != len(self.ids):
            raise ValueError("vocabulary ids must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, external_id: str) -> int:
        """Index of an external id; raises KeyError for an unknown id."""
        return self._positions[external_id]

    def get(self, external_id: str, default: int = UNKNOWN_INDEX) -> int:
        return self._positions.get(external_id, default)

    def external(self, index: int) -> str:
        return self.ids[index - 1]

    @cached_property
    def utf8_positions(self) -> dict[bytes, int]:
        """UTF-8 id -> index: what Redis replies are looked up in, without decoding them."""
        return {id_.encode(): index for id_, index in self._positions.items()}

    def lookup_utf8(self, ids: Iterable[bytes]) -> list[int]:
        """The index of each UTF-8 id, UNKNOWN_INDEX where the vocabulary lacks it."""
        return list(map(self.utf8_positions.get, ids, repeat(UNKNOWN_INDEX)))

    def translate(self, other: Vocabulary) -> np.ndarray:
        """int64 array mapping each index of `other` (0 included, which maps to 0) to this
        vocabulary's index of the same id, UNKNOWN_INDEX where this one lacks it."""
        return np.array([0, *(self.get(id_) for id_ in other.ids)], dtype=np.int64)


def score_column(item_index: int | np.ndarray) -> int | np.ndarray:
    """The score column of an item index (padding has none)."""
    return item_index - 1


def item_index_of_column(column: int | np.ndarray) -> int | np.ndarray:
    return column + 1


def input_rows(histories: Sequence[Sequence[int] | np.ndarray], length: int) -> np.ndarray:
    """The network's input for each history: int64 [len(histories), length].

    A history is a user's item indices, oldest first, with UNKNOWN_INDEX (0) for items the model
    does not know. Unknown items are skipped, not turned into padding in place: a row holds the
    last `length` KNOWN items, oldest first, left-padded with PADDING_INDEX.
    """
    rows = np.full((len(histories), length), PADDING_INDEX, dtype=np.int64)
    for row, history in enumerate(histories):
        if isinstance(history, np.ndarray):
            known = history[history != UNKNOWN_INDEX]
        else:
            known = [index for index in history if index != UNKNOWN_INDEX]
        tail = known[-length:]
        if len(tail):
            rows[row, length - len(tail) :] = tail
    return rows
