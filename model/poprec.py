"""PopRec: every user gets the items ranked by how often they were taken in training."""

from __future__ import annotations

import numpy as np
import torch

from model.base import SequentialRecommender


class PopRec(SequentialRecommender):
    """Scores are training interaction counts, whatever the user or the sequence.

    Nothing is learned by gradient: ``trainable = False`` tells the harness to call
    ``fit_counts`` instead of the training loop. The counts are a buffer, so checkpoints and
    the ONNX export carry them like any other weight. There is no item-vector output layer:
    ``forward`` reads the scores straight from the buffer.
    """

    name = "poprec"
    trainable = False
    hyperparameter_names = ("L",)
    item_tables = ("counts",)
    user_tables = ()
    counts: torch.Tensor

    def __init__(self, num_users: int, num_items: int, L: int = 5) -> None:
        super().__init__(num_users, num_items, L=L)
        self.register_buffer("counts", torch.zeros(num_items + 1))

    def fit_counts(self, counts: np.ndarray) -> PopRec:
        """Scores := ``counts``, actions per item index (length num_items + 1); padding gets 0.

        ``counts`` is what ``training.dataset.Sequences.item_counts()`` returns; it is copied.
        """
        counts = np.asarray(counts)
        if counts.shape != (self.num_items + 1,):
            raise ValueError(
                f"counts must have length num_items + 1 = {self.num_items + 1}, got {counts.shape}"
            )
        if (counts < 0).any():
            raise ValueError("counts must not be negative")
        scores = torch.tensor(counts, dtype=torch.float32)
        scores[0] = 0.0
        self.counts.copy_(scores)
        return self

    def sequence_features(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        """Nothing of the history is read: an empty feature vector [B, 0]."""
        return self.counts.new_zeros(items.shape[0], 0)

    def forward(
        self,
        items: torch.Tensor,
        users: torch.Tensor,  # noqa: ARG002
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of ``targets`` [B, K], or of every item index [B, num_items + 1] if None."""
        if targets is not None:
            return self.counts[targets]
        return self.counts.expand(items.shape[0], -1)
