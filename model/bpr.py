"""BPR's matrix factorisation (Rendle et al., 2009): a user vector against item vectors."""

from __future__ import annotations

import torch
from torch import nn

from model.base import SequentialRecommender
from model.embedding_init import normal_init
from model.output import ItemOutput


class BPR(SequentialRecommender):
    """score(u, i) = p_u . q_i + b_i; the sequence is ignored.

    Trained by the shared loop, i.e. with the paper's sampled-negative cross-entropy rather
    than BPR's pairwise loss: what this baseline stands for is the non-sequential model.
    """

    name = "bpr"
    hyperparameter_names = ("L", "d")
    d: int

    def __init__(self, num_users: int, num_items: int, L: int = 5, d: int = 50) -> None:
        super().__init__(num_users, num_items, L=L, d=d)
        self.user_embeddings = nn.Embedding(num_users + 1, d)
        normal_init(self.user_embeddings)
        self.output = ItemOutput(num_items, d)

    def sequence_features(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return self.user_embeddings(users)  # [B, d]
