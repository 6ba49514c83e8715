"""Training instances cut from users' item sequences (the prediction input is
`contract.ids.input_rows`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contract.ids import PADDING_INDEX


@dataclass(frozen=True)
class Instances:
    """Training instances: L input items, the T items that follow, and whose sequence it is."""

    users: np.ndarray  # int64 [n]: user index (sequence k belongs to user k + 1)
    inputs: np.ndarray  # int64 [n, L]
    targets: np.ndarray  # int64 [n, T]

    def __len__(self) -> int:
        return len(self.users)


def training_instances(sequences: Sequence[np.ndarray], L: int, T: int) -> Instances:
    """Windows of L + T items sliding by one over each sequence, as in the reference (Caser).

    A sequence of n >= L + T items gives n - L - T + 1 windows, oldest first; a shorter one
    gives a single window, left-padded with the padding index (its targets may then contain
    padding, which the loss ignores); an empty one gives none.
    """
    if L < 1 or T < 1:
        raise ValueError(f"L and T must be positive, got L={L}, T={T}")
    width = L + T
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    # One flat array with `width` padding items before each sequence, so every window
    # (padded or not) is a contiguous slice of it: windows are then pure index arithmetic.
    starts = np.cumsum(lengths + width) - lengths  # where each sequence begins in `flat`
    flat = np.full(int(lengths.sum() + width * len(lengths)), PADDING_INDEX, dtype=np.int64)
    if lengths.sum():
        flat[np.repeat(starts, lengths) + _ranges(lengths)] = np.concatenate(
            [np.asarray(s, dtype=np.int64) for s in sequences if len(s)]
        )
    windows_per_user = np.where(lengths >= width, lengths - width + 1, (lengths > 0).astype(int))
    first_window = np.where(lengths >= width, starts, starts + lengths - width)
    window_starts = np.repeat(first_window, windows_per_user) + _ranges(windows_per_user)
    windows = flat[window_starts[:, None] + np.arange(width)]
    users = np.repeat(np.arange(1, len(lengths) + 1, dtype=np.int64), windows_per_user)
    return Instances(users=users, inputs=windows[:, :L].copy(), targets=windows[:, L:].copy())


def _ranges(counts: np.ndarray) -> np.ndarray:
    """concatenate(arange(c) for c in counts), without a Python loop."""
    total = int(counts.sum())
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - offsets
