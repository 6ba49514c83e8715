"""CosRec-base, the paper's MLP ablation: each item pair through an MLP, summed over pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.base import SequentialRecommender
from model.embedding_init import normal_init
from model.output import ItemOutput
from model.pairwise import pairwise_linear, pairwise_tensor


class CosRecBase(SequentialRecommender):
    """[e_i ; e_j] -> Linear 2d->h -> ReLU -> Linear h->h -> ReLU -> dropout, summed over (i, j)."""

    name = "cosrec-base"
    hyperparameter_names = ("L", "d", "hidden_dim", "dropout")
    d: int
    hidden_dim: int
    dropout: float

    def __init__(
        self,
        num_users: int,
        num_items: int,
        L: int = 5,
        d: int = 50,
        hidden_dim: int = 100,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(num_users, num_items, L=L, d=d, hidden_dim=hidden_dim, dropout=dropout)
        # First Linear as two per-item projections (see model.pairwise.pairwise_linear).
        self.fast = True

        self.item_embeddings = nn.Embedding(num_items + 1, d)
        self.user_embeddings = nn.Embedding(num_users + 1, d)
        normal_init(self.item_embeddings, self.user_embeddings)
        self.pair_fc1 = nn.Linear(2 * d, hidden_dim)
        self.pair_fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.output = ItemOutput(num_items, hidden_dim + d)

    def sequence_features(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """items [B, L], users [B] -> [B, hidden_dim + d]."""
        embeddings = self.item_embeddings(items)  # [B, L, d]
        if self.fast:
            hidden = pairwise_linear(embeddings, self.pair_fc1.weight, self.pair_fc1.bias)
        else:
            hidden = self.pair_fc1(pairwise_tensor(embeddings).permute(0, 2, 3, 1))
        hidden = torch.relu(self.pair_fc2(torch.relu(hidden)))  # [B, L, L, h]
        hidden = F.dropout(hidden, self.dropout, self.training)
        return torch.cat([hidden.sum(dim=(1, 2)), self.user_embeddings(users)], dim=1)
