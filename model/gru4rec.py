"""GRU4Rec (Hidasi et al., 2016): a GRU reads the last L items; its final state scores items."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.base import SequentialRecommender
from model.embedding_init import normal_init, zero_padding
from model.output import ItemOutput


class GRU4Rec(SequentialRecommender):
    """Embeddings of the L items, oldest first, through a one-layer GRU of d units.

    Session-based, as published: no user vector. Padding (item 0) is a zero, untrained input,
    so a short history starts the GRU from the zero state after a few zero steps.
    """

    name = "gru4rec"
    hyperparameter_names = ("L", "d", "dropout")
    d: int
    dropout: float

    def __init__(
        self, num_users: int, num_items: int, L: int = 5, d: int = 50, dropout: float = 0.5
    ) -> None:
        super().__init__(num_users, num_items, L=L, d=d, dropout=dropout)
        self.item_embeddings = nn.Embedding(num_items + 1, d, padding_idx=0)
        normal_init(self.item_embeddings)
        zero_padding(self.item_embeddings)
        self.gru = nn.GRU(d, d, batch_first=True)
        self.output = ItemOutput(num_items, d)

    def sequence_features(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        _, last_state = self.gru(self.item_embeddings(items))  # [1, B, d]
        return F.dropout(last_state[0], self.dropout, self.training)
