"""CosRec learns a 'skip' pattern (Figure 1b) that no first-order Markov model can express."""

from __future__ import annotations

import numpy as np
import torch

from contract.ids import GENERIC_USER_INDEX
from model import build_model
from training.dataset import Sequences
from training.fit import TrainConfig, fit, set_seed
from training.planted import planted_skip_sequences
from training.scoring import torch_scorer

L = 5
NUM_USERS, NUM_ITEMS, LENGTH, TRAIN_LENGTH = 400, 100, 30, 24


def next_item_cases(full: np.ndarray, positions: range) -> tuple[np.ndarray, np.ndarray]:
    """(the L items before position t, the item at t) for every user and every t in positions."""
    inputs = np.concatenate([full[:, t - L : t] for t in positions])
    targets = np.concatenate([full[:, t] for t in positions])
    return inputs, targets


def first_order_markov_upper_bound(last_items: np.ndarray, targets: np.ndarray) -> float:
    """Hit rate@1 of the best predictor that sees only the last item, chosen on these very
    cases (an oracle): for each last item, the most frequent next item. No first-order
    Markov model, however trained, can beat it on these cases."""
    counts = np.zeros((NUM_ITEMS + 1, NUM_ITEMS + 1), dtype=np.int64)
    np.add.at(counts, (last_items, targets), 1)
    return float(counts.max(axis=1).sum() / len(targets))


def test_the_last_item_alone_predicts_nothing_of_the_planted_sequences():
    data = planted_skip_sequences(NUM_USERS, NUM_ITEMS, LENGTH, noise=0.1, seed=1)
    inputs, targets = next_item_cases(np.stack(data.sequences), range(L, LENGTH))
    assert first_order_markov_upper_bound(inputs[:, -1], targets) < 0.15
    # ...while the item two steps back decides the next one, up to the planted noise.
    pairs = np.zeros((NUM_ITEMS + 1, NUM_ITEMS + 1), dtype=np.int64)
    np.add.at(pairs, (inputs[:, -2], targets), 1)
    assert pairs.max(axis=1).sum() / len(targets) > 0.85


def test_cosrec_learns_the_skip_pattern_a_markov_chain_cannot():
    torch.set_num_threads(1)
    data = planted_skip_sequences(NUM_USERS, NUM_ITEMS, LENGTH, noise=0.1, seed=1)
    full = np.stack(data.sequences)
    train = Sequences(data.users, data.items, tuple(full[:, :TRAIN_LENGTH]))
    inputs, targets = next_item_cases(full, range(TRAIN_LENGTH, LENGTH))  # held-out positions
    markov_bound = first_order_markov_upper_bound(inputs[:, -1], targets)

    set_seed(0)
    model = build_model(
        "cosrec", NUM_USERS, NUM_ITEMS, L=L, d=32, block_channels=(32, 64), fc_dim=64
    )
    # Every instance trains the generic user, so the score depends on the sequence alone and
    # the comparison with a function of the last item is like for like.
    config = TrainConfig(
        epochs=8, batch_size=128, lr=5e-3, T=1, L=L, seed=0, generic_user_rate=1.0, progress=False
    )
    fit(model, train, config)
    scores = torch_scorer(model)(np.full(len(targets), GENERIC_USER_INDEX), inputs)
    scores[:, 0] = -torch.inf  # never recommend padding
    hit_rate = float((scores.argmax(dim=1).numpy() == targets).mean())

    assert markov_bound < 0.15
    assert hit_rate > 0.6
    assert hit_rate > markov_bound + 0.4
