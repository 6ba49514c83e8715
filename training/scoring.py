"""Scoring every item with a PyTorch model: what evaluation and export parity use."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

Scorer = Callable[[np.ndarray, np.ndarray], torch.Tensor]


def torch_scorer(model: nn.Module, device: str = "cpu", batch_size: int = 1024) -> Scorer:
    """score(users int64 [B], items int64 [B, L]) -> float32 CPU tensor [B, num_items + 1].

    Column 0 is the padding item. Runs in eval mode without gradients, in chunks of
    ``batch_size`` rows, and restores the model's train/eval mode afterwards, so it is safe
    to call between training epochs.
    """
    target = torch.device(device)

    def score(users: np.ndarray, items: np.ndarray) -> torch.Tensor:
        was_training = model.training
        model.eval()
        model.to(target)
        users_t = torch.as_tensor(np.asarray(users, dtype=np.int64))
        items_t = torch.as_tensor(np.asarray(items, dtype=np.int64))
        chunks = []
        try:
            with torch.no_grad():
                for start in range(0, len(users_t), batch_size):
                    stop = start + batch_size
                    scores = model(items_t[start:stop].to(target), users_t[start:stop].to(target))
                    chunks.append(scores.float().cpu())
        finally:
            model.train(was_training)
        if not chunks:
            return torch.empty((0, model.num_items + 1), dtype=torch.float32)
        return torch.cat(chunks)

    return score
