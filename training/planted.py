"""Generated sequences with a planted 'skip' pattern (the paper's Figure 1b).

The next item is decided by the item TWO steps back, x_t = f(x_{t-2}) for a fixed random
permutation f, so the last item alone says nothing about the next one: a first-order Markov
model cannot learn it, a model of the last L items can.
"""

from __future__ import annotations

import numpy as np

from contract.ids import Vocabulary
from training.dataset import Sequences


def planted_skip_sequences(
    num_users: int, num_items: int, length: int, noise: float = 0.1, seed: int = 0
) -> Sequences:
    """``num_users`` sequences of ``length`` items over ``num_items`` items.

    The first two items are uniform; after that x_t = f(x_{t-2}), except that with probability
    ``noise`` x_t is uniform instead (and the chain carries on from it). Ids are "u1".., "i1"..
    """
    if num_items < 2 or length < 3 or not 0.0 <= noise <= 1.0:
        raise ValueError("need num_items >= 2, length >= 3 and noise in [0, 1]")
    rng = np.random.default_rng(seed)
    skip = rng.permutation(num_items) + 1  # f(i) = skip[i - 1]
    items = np.empty((num_users, length), dtype=np.int64)
    items[:, :2] = rng.integers(1, num_items + 1, size=(num_users, 2))
    random_items = rng.integers(1, num_items + 1, size=(num_users, length))
    is_noise = rng.random((num_users, length)) < noise
    for t in range(2, length):  # a loop over positions only; each step is vectorised over users
        items[:, t] = np.where(is_noise[:, t], random_items[:, t], skip[items[:, t - 2] - 1])
    return Sequences(
        users=Vocabulary(tuple(f"u{k}" for k in range(1, num_users + 1))),
        items=Vocabulary(tuple(f"i{k}" for k in range(1, num_items + 1))),
        sequences=tuple(items),
    )
