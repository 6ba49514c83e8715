"""CosRec (Yan et al., CIKM 2019): a 2D CNN over the pairwise encodings of the last L items."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.base import SequentialRecommender
from model.embedding_init import normal_init
from model.grid import WinogradF3x3, batch_norm_cells_first, conv_cells_first
from model.output import ItemOutput
from model.pairwise import pairwise_linear, pairwise_tensor


class ConvBlock(nn.Module):
    """Conv (1x1 by default) -> BatchNorm -> ReLU -> Conv 3x3 -> BatchNorm -> ReLU (Table 1)."""

    def __init__(self, in_channels: int, out_channels: int, first_kernel: int, padding: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=first_kernel)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=padding)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.winograd = WinogradF3x3()  # used by the fast path when the grid is 5x5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(x)))

    def forward_cells_first(self, x: torch.Tensor, first_conv_done: bool = False) -> torch.Tensor:
        """The same block on a cells-first grid x [H, W, B, C] (see model.grid)."""
        if not first_conv_done:
            x = conv_cells_first(x, self.conv1)
        x = torch.relu(batch_norm_cells_first(x, self.bn1))
        x = conv_cells_first(x, self.conv2, self.winograd)
        return torch.relu(batch_norm_cells_first(x, self.bn2))


class CosRec(SequentialRecommender):
    """The paper's network (Table 1) with the reference implementation's defaults.

    ``first_kernel=L`` makes the first convolution span the whole L x L grid, so each of its
    filters is one weight per item pair (the paper's Figure 3); the default 1 is Table 1.
    """

    name = "cosrec"
    hyperparameter_names = ("L", "d", "block_channels", "fc_dim", "dropout", "first_kernel")
    d: int
    block_channels: list[int]
    fc_dim: int
    dropout: float
    first_kernel: int

    def __init__(
        self,
        num_users: int,
        num_items: int,
        L: int = 5,
        d: int = 50,
        block_channels: Sequence[int] = (128, 256),
        fc_dim: int = 150,
        dropout: float = 0.5,
        first_kernel: int = 1,
    ) -> None:
        if not 1 <= first_kernel <= L:
            raise ValueError(f"first_kernel must be in 1..L={L}, got {first_kernel}")
        if not block_channels:
            raise ValueError("block_channels needs at least one block")
        super().__init__(
            num_users,
            num_items,
            L=L,
            d=d,
            block_channels=[int(c) for c in block_channels],
            fc_dim=fc_dim,
            dropout=dropout,
            first_kernel=first_kernel,
        )
        # True computes the same function with less work: the first 1x1 convolution as two
        # per-item projections instead of over the L x L x 2d tensor, every layer as matrix
        # products on cells-first grids, the 3x3 convolution of a 5x5 grid by Winograd's
        # F(3x3, 3x3) (model.grid). False, or first_kernel > 1, runs the literal network.
        self.fast = True

        self.item_embeddings = nn.Embedding(num_items + 1, d)
        self.user_embeddings = nn.Embedding(num_users + 1, d)
        normal_init(self.item_embeddings, self.user_embeddings)

        blocks, channels, size = [], 2 * d, L
        for index, out_channels in enumerate(self.block_channels):
            kernel = first_kernel if index == 0 else 1
            size -= kernel - 1
            # Table 1 uses unpadded 3x3 convolutions (5x5 -> 3x3 -> 1x1); once the grid is
            # smaller than 3 (short L, or a wide first kernel) pad so the 3x3 still fits.
            padding = 0 if size >= 3 else 1
            size -= 2 * (1 - padding)
            blocks.append(ConvBlock(channels, out_channels, kernel, padding))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(channels, fc_dim)
        self.output = ItemOutput(num_items, fc_dim + d)

    def sequence_features(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """items [B, L], users [B] -> [B, fc_dim + d]: the vector every item is scored against."""
        if self.fast and self.first_kernel == 1:
            first = self.blocks[0]
            weight = first.conv1.weight.flatten(1)  # [C, 2d, 1, 1] -> [C, 2d]
            embeddings = self.item_embeddings(items.t())  # [L, B, d]: sequence first
            x = pairwise_linear(embeddings, weight, first.conv1.bias, cells_first=True)
            x = first.forward_cells_first(x, first_conv_done=True)  # [L, L, B, C] in
            for block in self.blocks[1:]:
                x = block.forward_cells_first(x)
            pooled = x.mean(dim=(0, 1))
        else:
            x = pairwise_tensor(self.item_embeddings(items))  # [B, 2d, L, L]
            for block in self.blocks:
                x = block(x)
            pooled = x.mean(dim=(2, 3))
        x = F.dropout(torch.tanh(self.fc(pooled)), self.dropout, self.training)
        return torch.cat([x, self.user_embeddings(users)], dim=1)
