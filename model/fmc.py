"""FMC (Rendle et al., 2010): a factorised first-order Markov chain over the last item."""

from __future__ import annotations

import torch
from torch import nn

from model.base import SequentialRecommender
from model.embedding_init import normal_init, zero_padding
from model.output import ItemOutput


class FMC(SequentialRecommender):
    """score(l, i) = v_l . w_i + b_i for the last item l; the user and older items are ignored.

    Item 0 (padding) has a zero, untrained vector: with no history the scores are the biases.
    """

    name = "fmc"
    hyperparameter_names = ("L", "d")
    d: int

    def __init__(self, num_users: int, num_items: int, L: int = 5, d: int = 50) -> None:
        super().__init__(num_users, num_items, L=L, d=d)
        self.item_embeddings = nn.Embedding(num_items + 1, d, padding_idx=0)
        normal_init(self.item_embeddings)
        zero_padding(self.item_embeddings)
        self.output = ItemOutput(num_items, d)

    def sequence_features(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return self.item_embeddings(items[:, -1])  # [B, d]
