"""The in-memory form of interaction data that every training step shares.

Index conventions, used everywhere (training, export, the bundle, the service):
- items are indexed 1..num_items; index 0 is padding (never a real item, never ranked);
- users are indexed 1..num_users; index 0 is the generic "unknown user" that serves users
  who were not in training.
External ids are strings; ``Vocabulary.ids[i - 1]`` is the external id of index ``i``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

PADDING_INDEX = 0
GENERIC_USER_INDEX = 0


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

    def get(self, external_id: str, default: int = 0) -> int:
        return self._positions.get(external_id, default)

    def external(self, index: int) -> str:
        return self.ids[index - 1]


@dataclass(frozen=True)
class Sequences:
    """Each user's item indices in time order, oldest first.

    ``sequences[k]`` belongs to user index ``k + 1`` (``users.ids[k]``). Every array is int64.
    """

    users: Vocabulary
    items: Vocabulary
    sequences: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if len(self.sequences) != len(self.users):
            raise ValueError("one sequence per user is required")

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def item_counts(self) -> np.ndarray:
        """Actions per item index (int64, length num_items + 1; padding counts 0)."""
        every_action = np.concatenate([*self.sequences, np.zeros(0, dtype=np.int64)])
        return np.bincount(every_action, minlength=self.num_items + 1)

    def fingerprint(self) -> str:
        """sha256 over ids and sequences: identifies the exact training data of a bundle."""
        digest = hashlib.sha256()
        for vocabulary in (self.users, self.items):
            digest.update("\x1f".join(vocabulary.ids).encode())
            digest.update(b"\x1e")
        for seq in self.sequences:
            digest.update(np.asarray(seq, dtype=np.int64).tobytes())
            digest.update(b"\x1e")
        return digest.hexdigest()


@dataclass(frozen=True)
class Split:
    """A chronological train/test split over the same users and items."""

    train: Sequences
    test: Sequences

    def __post_init__(self) -> None:
        if self.train.users != self.test.users or self.train.items != self.test.items:
            raise ValueError("train and test must share user and item vocabularies")
