"""The reference implementations' initialisation of embedding tables, in one place."""

from __future__ import annotations

import torch
from torch import nn


def normal_init(*tables: nn.Embedding) -> None:
    """Every row ~ N(0, std = 1 / dim), in the order given (the order fixes the seeded draws)."""
    for table in tables:
        nn.init.normal_(table.weight, 0.0, 1.0 / table.embedding_dim)


def zero_padding(table: nn.Embedding) -> None:
    """Row 0 (padding) to zero, so an empty history adds nothing; padding_idx keeps it there."""
    with torch.no_grad():
        table.weight[0].zero_()
