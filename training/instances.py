"""Model inputs cut from users' item sequences."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.dataset import PADDING_INDEX


def last_items(sequences: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Each user's last `length` items, oldest first, left-padded with the padding index.

    This is the network's input at prediction time: int64 array [num_users, length].
    """
    window = np.full((len(sequences), length), PADDING_INDEX, dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = np.asarray(seq[-length:], dtype=np.int64)
        if len(tail):
            window[row, length - len(tail) :] = tail
    return window
