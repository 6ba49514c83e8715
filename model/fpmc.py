"""FPMC (Rendle et al., 2010): matrix factorisation plus a factorised Markov chain."""

from __future__ import annotations

import torch
from torch import nn

from model.base import SequentialRecommender
from model.embedding_init import normal_init, zero_padding
from model.output import ItemOutput


class FPMC(SequentialRecommender):
    """score(u, l, i) = p_u . q_i + v_l . w_i + b_i, for the user u and the last item l.

    One output row per item holds [q_i ; w_i], so the two dot products are one product of
    the concatenation [p_u ; v_l]. Item 0 (padding) has a zero, untrained vector.
    """

    name = "fpmc"
    hyperparameter_names = ("L", "d")
    d: int

    def __init__(self, num_users: int, num_items: int, L: int = 5, d: int = 50) -> None:
        super().__init__(num_users, num_items, L=L, d=d)
        self.user_embeddings = nn.Embedding(num_users + 1, d)
        self.item_embeddings = nn.Embedding(num_items + 1, d, padding_idx=0)
        normal_init(self.user_embeddings, self.item_embeddings)
        zero_padding(self.item_embeddings)
        self.output = ItemOutput(num_items, 2 * d)

    def sequence_features(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """[p_u ; v_l]: [B, 2d]."""
        return torch.cat([self.user_embeddings(users), self.item_embeddings(items[:, -1])], dim=1)
