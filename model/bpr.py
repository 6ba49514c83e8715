"""BPR's matrix factorisation (Rendle et al., 2009): a user vector against item vectors."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from model.embedding_init import normal_init
from model.output import ItemOutput


class BPR(nn.Module):
    """score(u, i) = p_u . q_i + b_i; the sequence is ignored.

    Trained by the shared loop, i.e. with the paper's sampled-negative cross-entropy rather
    than BPR's pairwise loss: what this baseline stands for is the non-sequential model.
    """

    name: ClassVar[str] = "bpr"

    def __init__(self, num_users: int, num_items: int, L: int = 5, d: int = 50) -> None:
        super().__init__()
        self.num_users, self.num_items, self.L, self.d = num_users, num_items, L, d
        self.user_embeddings = nn.Embedding(num_users + 1, d)
        normal_init(self.user_embeddings)
        self.output = ItemOutput(num_items, d)

    def hyperparameters(self) -> dict[str, Any]:
        return {"L": self.L, "d": self.d}

    def forward(
        self,
        items: torch.Tensor,  # noqa: ARG002
        users: torch.Tensor,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of ``targets`` [B, K], or of every item index [B, num_items + 1] if None.

        Takes every input of the shared model interface, though it does not read them all.
        """
        return self.output(self.user_embeddings(users), targets)
