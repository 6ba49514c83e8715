"""PopRec: every user gets the items ranked by how often they were taken in training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


class PopRec(nn.Module):
    """Scores are training interaction counts, whatever the user or the sequence.

    Nothing is learned by gradient: ``trainable = False`` tells the harness to call
    ``fit_counts`` instead of the training loop. The counts are a buffer, so checkpoints and
    the ONNX export carry them like any other weight.
    """

    name: ClassVar[str] = "poprec"
    trainable: ClassVar[bool] = False

    def __init__(self, num_users: int, num_items: int, L: int = 5) -> None:
        super().__init__()
        self.num_users, self.num_items, self.L = num_users, num_items, L
        self.register_buffer("counts", torch.zeros(num_items + 1))

    def hyperparameters(self) -> dict[str, Any]:
        return {"L": self.L}

    def fit_counts(self, sequences: Sequence[np.ndarray]) -> PopRec:
        """Sets the scores to the number of training interactions per item (padding: 0)."""
        items = np.concatenate([np.zeros(0, dtype=np.int64), *sequences]).astype(np.int64)
        counts = np.bincount(items, minlength=self.num_items + 1).astype(np.float32)
        if len(counts) != self.num_items + 1:
            raise ValueError(f"item indices must lie in 1..{self.num_items}")
        counts[0] = 0.0
        self.counts.copy_(torch.from_numpy(counts))
        return self

    def forward(
        self,
        items: torch.Tensor,
        users: torch.Tensor,  # noqa: ARG002
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of ``targets`` [B, K], or of every item index [B, num_items + 1] if None.

        Takes every input of the shared model interface, though it does not read them all.
        """
        if targets is not None:
            return self.counts[targets]
        return self.counts.expand(items.shape[0], -1)
