"""How well the generic user serves users who were not in training, against popularity.

Some users are held out of training entirely. At evaluation they get the generic user index
(0) and their own history: the service's situation for a user it has never seen. Training with
`generic_user_rate > 0` teaches the generic user's embedding; its cost shows on the known
users' figures, its benefit on the held-out users'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from contract.ids import GENERIC_USER_INDEX, Vocabulary
from model import SequentialRecommender, build_model
from training.dataset import Sequences, Split
from training.evaluation import evaluate
from training.fit import TrainConfig, fit, set_seed
from training.pipeline import METRIC_KEYS
from training.scoring import ScoreFn, torch_scorer


def users_subset(split: Split, keep: np.ndarray) -> Split:
    """`split` restricted to the users at the 0-based positions `keep`, re-indexed 1..n."""
    users = Vocabulary(tuple(split.train.users.ids[k] for k in keep))

    def part(seqs: Sequences) -> Sequences:
        return Sequences(users, seqs.items, tuple(seqs.sequences[k] for k in keep))

    return Split(train=part(split.train), test=part(split.test))


def hold_out_users(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(known, held_out): a random `fraction` of the users goes to `held_out`."""
    if not 0 < fraction < 1:
        raise ValueError("the held-out fraction must lie in (0, 1)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(split.train.num_users)
    cut = max(1, round(fraction * len(order)))
    return users_subset(split, np.sort(order[cut:])), users_subset(split, np.sort(order[:cut]))


def popularity_scorer(train: Sequences) -> ScoreFn:
    """Every user gets the same scores: the items' training counts."""
    counts = train.item_counts()
    scores = torch.from_numpy(counts.astype(np.float32))

    def score(users: np.ndarray, histories: Sequence[np.ndarray]) -> torch.Tensor:  # noqa: ARG001
        return scores.expand(len(users), -1)

    return score


def generic_user_scorer(model: SequentialRecommender, device: str = "cpu") -> ScoreFn:
    """The model's scores with every user replaced by the generic user."""
    scorer = torch_scorer(model, device)

    def score(users: np.ndarray, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return scorer(np.full_like(users, GENERIC_USER_INDEX), histories)

    return score


def _figures(metrics: dict[str, float]) -> dict[str, float]:
    return {key: metrics[key] for key in (*METRIC_KEYS, "users") if key in metrics}


def new_user_experiment(
    split: Split,
    model_name: str,
    hyperparameters: dict[str, Any],
    config: TrainConfig,
    held_out_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Train without the held-out users, then measure known users, held-out users through the
    generic user, and held-out users through popularity."""
    known, held_out = hold_out_users(split, held_out_fraction, seed)
    set_seed(config.seed)
    model = build_model(
        model_name, known.train.num_users, known.train.num_items, L=config.L, **hyperparameters
    )
    fit(model, known.train, config)
    return {
        "generic_user_rate": config.generic_user_rate,
        "epochs": config.epochs,
        "held_out_fraction": held_out_fraction,
        "known_users": _figures(evaluate(torch_scorer(model, config.device), known)),
        "held_out_generic_user": _figures(
            evaluate(generic_user_scorer(model, config.device), held_out)
        ),
        "held_out_popularity": _figures(evaluate(popularity_scorer(known.train), held_out)),
    }
