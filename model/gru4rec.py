"""GRU4Rec (Hidasi et al., 2016): a GRU reads the last L items; its final state scores items."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from model.embedding_init import normal_init
from model.output import ItemOutput


class GRU4Rec(nn.Module):
    """Embeddings of the L items, oldest first, through a one-layer GRU of d units.

    Session-based, as published: no user vector. Padding (item 0) is a zero, untrained input,
    so a short history starts the GRU from the zero state after a few zero steps.
    """

    name: ClassVar[str] = "gru4rec"

    def __init__(
        self, num_users: int, num_items: int, L: int = 5, d: int = 50, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.num_users, self.num_items, self.L, self.d = num_users, num_items, L, d
        self.dropout_rate = dropout
        self.item_embeddings = nn.Embedding(num_items + 1, d, padding_idx=0)
        normal_init(self.item_embeddings)
        with torch.no_grad():
            self.item_embeddings.weight[0].zero_()
        self.gru = nn.GRU(d, d, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.output = ItemOutput(num_items, d)

    def hyperparameters(self) -> dict[str, Any]:
        return {"L": self.L, "d": self.d, "dropout": self.dropout_rate}

    def forward(
        self,
        items: torch.Tensor,
        users: torch.Tensor,  # noqa: ARG002
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of ``targets`` [B, K], or of every item index [B, num_items + 1] if None.

        Takes every input of the shared model interface, though it does not read them all.
        """
        _, last_state = self.gru(self.item_embeddings(items))  # [1, B, d]
        return self.output(self.dropout(last_state[0]), targets)
