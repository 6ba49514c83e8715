"""FMC (Rendle et al., 2010): a factorised first-order Markov chain over the last item."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from model.embedding_init import normal_init
from model.output import ItemOutput


class FMC(nn.Module):
    """score(l, i) = v_l . w_i + b_i for the last item l; the user and older items are ignored.

    Item 0 (padding) has a zero, untrained vector: with no history the scores are the biases.
    """

    name: ClassVar[str] = "fmc"

    def __init__(self, num_users: int, num_items: int, L: int = 5, d: int = 50) -> None:
        super().__init__()
        self.num_users, self.num_items, self.L, self.d = num_users, num_items, L, d
        self.item_embeddings = nn.Embedding(num_items + 1, d, padding_idx=0)
        normal_init(self.item_embeddings)
        with torch.no_grad():
            self.item_embeddings.weight[0].zero_()
        self.output = ItemOutput(num_items, d)

    def hyperparameters(self) -> dict[str, Any]:
        return {"L": self.L, "d": self.d}

    def forward(
        self,
        items: torch.Tensor,
        users: torch.Tensor,  # noqa: ARG002
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of ``targets`` [B, K], or of every item index [B, num_items + 1] if None.

        Takes every input of the shared model interface, though it does not read them all.
        """
        return self.output(self.item_embeddings(items[:, -1]), targets)
