"""The in-memory form of interaction data that every training step shares.

Indices follow `contract.ids` (items 1..num_items, 0 = padding; users 1..num_users, 0 = the
generic user); `Vocabulary` is the contract's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from contract.ids import Vocabulary


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
