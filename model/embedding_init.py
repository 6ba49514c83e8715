"""The reference implementations' initialisation of embedding tables, in one place."""

from __future__ import annotations

from torch import nn


def normal_init(*tables: nn.Embedding) -> None:
    """Every row ~ N(0, std = 1 / dim), in the order given (the order fixes the seeded draws)."""
    for table in tables:
        nn.init.normal_(table.weight, 0.0, 1.0 / table.embedding_dim)
