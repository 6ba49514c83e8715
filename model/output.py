"""The output layer shared by CosRec and CosRec-base: one weight row and one bias per item."""

from __future__ import annotations

import torch
from torch import nn

from model.embedding_init import normal_init


class ItemOutput(nn.Module):
    """Scores items against a feature vector: score(item) = W[item] . x + b[item].

    Kept as embedding tables (not nn.Linear) so that training can gather only the rows of the
    targets and sampled negatives, while inference scores every item with one matrix product.
    Row 0 belongs to the padding item; it is never trained as a target or negative.
    """

    def __init__(self, num_items: int, feature_dim: int) -> None:
        super().__init__()
        self.weight = nn.Embedding(num_items + 1, feature_dim)
        self.bias = nn.Embedding(num_items + 1, 1)
        # As in the reference: N(0, std = 1/dim) weights, zero biases.
        normal_init(self.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """features [B, D]; targets [B, K] -> scores [B, K]; no targets -> [B, num_items + 1]."""
        if targets is None:
            return torch.addmm(self.bias.weight.squeeze(1), features, self.weight.weight.t())
        rows = self.weight(targets)  # [B, K, D]
        bias = self.bias(targets)  # [B, K, 1]
        return torch.baddbmm(bias, rows, features.unsqueeze(2)).squeeze(2)
