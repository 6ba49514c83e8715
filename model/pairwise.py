"""The pairwise encoding of a sequence (paper section 3.2) and its factorised first layer."""

from __future__ import annotations

import torch
from torch import nn


def pairwise_tensor(embeddings: torch.Tensor) -> torch.Tensor:
    """[B, L, d] -> [B, 2d, L, L], channels first, where cell (i, j) holds [e_i ; e_j]."""
    length = embeddings.shape[1]
    rows = embeddings.unsqueeze(2).expand(-1, -1, length, -1)  # [B, L, L, d]: e_i at (i, j)
    cols = embeddings.unsqueeze(1).expand(-1, length, -1, -1)  # [B, L, L, d]: e_j at (i, j)
    return torch.cat([rows, cols], dim=3).permute(0, 3, 1, 2)


def pairwise_linear(
    embeddings: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cells_first: bool = False,
) -> torch.Tensor:
    """A 1x1 convolution (or per-pair Linear) over the pairwise tensor, without building it.

    W [e_i ; e_j] + b = (W_a e_i + b) + W_b e_j, so L projections per half replace L x L
    concatenations; cell (i, j) of the result equals that of
    ``conv1x1(pairwise_tensor(embeddings))`` up to float rounding. weight [C, 2d].
    embeddings [B, L, d] -> [B, L, L, C]; with ``cells_first``, [L, B, d] -> [L, L, B, C].
    """
    d = embeddings.shape[-1]
    first = nn.functional.linear(embeddings, weight[:, :d], bias)
    second = nn.functional.linear(embeddings, weight[:, d:])
    if cells_first:
        return first.unsqueeze(1) + second.unsqueeze(0)
    return first.unsqueeze(2) + second.unsqueeze(1)
