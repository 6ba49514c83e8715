"""Caser (Tang and Wang, WSDM 2018): horizontal and vertical convolutions over the L x d
matrix of the last L item embeddings, as in the reference graytowne/caser_pytorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.base import SequentialRecommender
from model.embedding_init import normal_init
from model.output import ItemOutput


class Caser(SequentialRecommender):
    """The published defaults: 4 vertical (L x 1) filters, 16 horizontal (h x d) filters for
    each height h = 1..L with ReLU and max-pooling over time, dropout 0.5, a ReLU fully
    connected layer to d, and the user embedding concatenated before the output layer."""

    name = "caser"
    hyperparameter_names = ("L", "d", "vertical_filters", "horizontal_filters", "dropout")
    d: int
    vertical_filters: int
    horizontal_filters: int
    dropout: float

    def __init__(
        self,
        num_users: int,
        num_items: int,
        L: int = 5,
        d: int = 50,
        vertical_filters: int = 4,
        horizontal_filters: int = 16,
        dropout: float = 0.5,
    ) -> None:
        if vertical_filters < 1 or horizontal_filters < 1:
            raise ValueError("Caser needs at least one vertical and one horizontal filter")
        super().__init__(
            num_users,
            num_items,
            L=L,
            d=d,
            vertical_filters=vertical_filters,
            horizontal_filters=horizontal_filters,
            dropout=dropout,
        )
        self.item_embeddings = nn.Embedding(num_items + 1, d)
        self.user_embeddings = nn.Embedding(num_users + 1, d)
        normal_init(self.item_embeddings, self.user_embeddings)
        self.vertical = nn.Conv2d(1, vertical_filters, (L, 1))
        self.horizontal = nn.ModuleList(
            nn.Conv2d(1, horizontal_filters, (height, d)) for height in range(1, L + 1)
        )
        self.fc = nn.Linear(vertical_filters * d + horizontal_filters * L, d)
        self.output = ItemOutput(num_items, 2 * d)

    def sequence_features(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """items [B, L], users [B] -> [B, 2d]."""
        embeddings = self.item_embeddings(items).unsqueeze(1)  # [B, 1, L, d]
        # The reference applies no activation to the vertical convolution.
        vertical = self.vertical(embeddings).flatten(1)  # [B, n_v * d]
        horizontal = [
            torch.relu(conv(embeddings).squeeze(3)).amax(dim=2)  # max over positions: [B, n_h]
            for conv in self.horizontal
        ]
        hidden = F.dropout(torch.cat([vertical, *horizontal], dim=1), self.dropout, self.training)
        z = torch.relu(self.fc(hidden))
        return torch.cat([z, self.user_embeddings(users)], dim=1)
