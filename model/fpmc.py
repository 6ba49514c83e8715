"""FPMC (Rendle et al., 2010): matrix factorisation plus a factorised Markov chain."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from model.embedding_init import normal_init
from model.output import ItemOutput


class FPMC(nn.Module):
    """score(u, l, i) = p_u . q_i + v_l . w_i + b_i, for the user u and the last item l.

    One output row per item holds [q_i ; w_i], so the two dot products are one product of
    the concatenation [p_u ; v_l]. Item 0 (padding) has a zero, untrained vector.
    """

    name: ClassVar[str] = "fpmc"

    def __init__(self, num_users: int, num_items: int, L: int = 5, d: int = 50) -> None:
        super().__init__()
        self.num_users, self.num_items, self.L, self.d = num_users, num_items, L, d
        self.user_embeddings = nn.Embedding(num_users + 1, d)
        self.item_embeddings = nn.Embedding(num_items + 1, d, padding_idx=0)
        normal_init(self.user_embeddings, self.item_embeddings)
        with torch.no_grad():
            self.item_embeddings.weight[0].zero_()
        self.output = ItemOutput(num_items, 2 * d)

    def hyperparameters(self) -> dict[str, Any]:
        return {"L": self.L, "d": self.d}

    def forward(
        self, items: torch.Tensor, users: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of ``targets`` [B, K], or of every item index [B, num_items + 1] if None."""
        features = torch.cat(
            [self.user_embeddings(users), self.item_embeddings(items[:, -1])], dim=1
        )
        return self.output(features, targets)
