"""Negative sampling: items drawn uniformly from those a user has no training interaction with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class NegativeSampler:
    """Samples, for user u, uniformly from {1..num_items} minus u's training items (never 0).

    Exact and loop-free: draw a rank r among u's candidates, then map it to the r-th
    non-interacted item with one searchsorted over all users' sorted items, instead of
    rejection sampling.
    """

    def __init__(self, sequences: Sequence[np.ndarray], num_items: int) -> None:
        self.num_items = num_items
        per_user = [np.unique(np.asarray(s, dtype=np.int64)) for s in sequences]
        if any(len(items) and (items[0] < 1 or items[-1] > num_items) for items in per_user):
            raise ValueError(f"item indices must lie in 1..{num_items}")
        counts = np.array([len(items) for items in per_user], dtype=np.int64)
        # Index 0 is the generic user: it has no items of its own, so any item is a candidate.
        self.counts = np.concatenate([[0], counts])
        if np.any(self.counts >= num_items):
            raise ValueError("a user has interacted with every item: no negatives to sample")
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        items = np.concatenate([np.zeros(0, dtype=np.int64), *per_user])
        # For the k-th (0-based) item s_k of a user: how many non-interacted items precede it,
        # s_k - 1 - k; keyed by user so that one sorted array serves every user.
        ranks = items - 1 - (np.arange(len(items)) - np.repeat(self.offsets[1:], counts))
        user_of = np.repeat(np.arange(1, len(counts) + 1, dtype=np.int64), counts)
        self._keys = user_of * (num_items + 1) + ranks

    def sample(self, users: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """int64 [len(users), n] negatives; ``users`` are indices 0..num_users."""
        users = np.asarray(users, dtype=np.int64)
        candidates = self.num_items - self.counts[users]  # [B]
        rank = np.floor(rng.random((len(users), n)) * candidates[:, None]).astype(np.int64)
        keys = users[:, None] * (self.num_items + 1) + rank
        # Number of the user's own items whose rank is <= r: each one pushes the answer up by 1.
        skipped = np.searchsorted(self._keys, keys, side="right") - self.offsets[users][:, None]
        return rank + 1 + skipped
