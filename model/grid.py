"""CosRec's layers on cells-first grids [H, W, B, C], computed as plain matrix products.

CosRec's grids are tiny (5x5, 3x3) and its batches large, so a few big GEMMs per layer, forward
and backward, beat a general convolution kernel. Cells first keeps every per-cell operation
(1x1 convolution, BatchNorm, ReLU) on one contiguous [cells * B, C] matrix. Each function takes
the weights of an ordinary nn.Conv2d / nn.BatchNorm2d and computes what that module computes on
the NCHW view; the state_dict is the literal network's.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import nn

# Winograd F(3x3, 3x3): a 3x3 convolution over a 5x5 grid (exactly Table 1's first block) as
# 25 products per channel pair instead of 81, from the Toom-Cook points 0, 1, -1, 1/2, inf.
_WINOGRAD_POINTS = (0.0, 1.0, -1.0, 0.5)


class WinogradF3x3(nn.Module):
    """The transforms of Winograd's F(3x3, 3x3) as non-persistent buffers: they follow the
    model's device, stay out of the state_dict, and export as constants. Kept in float64 (some
    entries, like 8/3, are not exact in float32) and cast to the data's type where used."""

    def __init__(self) -> None:
        super().__init__()
        for name, matrix in zip(
            ("data_t", "weight_t", "output_t"), _winograd_matrices(), strict=True
        ):
            self.register_buffer(name, torch.tensor(matrix, dtype=torch.float64), False)

    def forward(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """Y = A^T [(G g G^T) . (B^T d B)] A for every channel pair; the 2D transforms are
        Kronecker matrices over the 25 cells: three GEMMs and a batch of 25 GEMMs.
        x [5, 5, B, Cin] -> [3, 3, B, Cout]."""
        _, _, batch, in_channels = x.shape
        out_channels = conv.out_channels
        data = (self.data_t.to(x.dtype) @ x.reshape(25, -1)).view(25, batch, in_channels)
        weight = conv.weight.permute(2, 3, 1, 0).reshape(9, in_channels * out_channels)
        weight = (self.weight_t.to(weight.dtype) @ weight).view(25, in_channels, out_channels)
        products = torch.bmm(data, weight)  # [25, B, Cout]
        out = self.output_t.to(products.dtype) @ products.view(25, -1)
        out = out.view(3, 3, batch, out_channels)
        return out if conv.bias is None else out + conv.bias


def conv_cells_first(
    x: torch.Tensor, conv: nn.Conv2d, winograd: WinogradF3x3 | None = None
) -> torch.Tensor:
    """``conv`` (square kernel, stride 1, zero padding) on x [H, W, B, Cin] -> [H', W', B, Cout].

    Given ``winograd``, a 3x3 convolution over a 5x5 grid runs as Winograd's F(3x3, 3x3)
    (not under autocast: low-precision arithmetic and the transforms do not mix well).
    """
    kernel, padding = conv.kernel_size[0], conv.padding[0]
    if padding:
        x = nn.functional.pad(x, (0, 0, 0, 0, padding, padding, padding, padding))
    height, width, batch, channels = x.shape
    if kernel == 1:
        return nn.functional.linear(x, conv.weight.flatten(1), conv.bias)
    use_winograd = winograd is not None and not torch.is_autocast_enabled(x.device.type)
    if use_winograd and kernel == 3 and height == width == 5:
        return winograd(x, conv)
    # Weight [Cout, Cin, kh, kw] flattened in (kh, kw, Cin) order to match the patches below.
    weight = conv.weight.permute(0, 2, 3, 1).flatten(1)
    if height == width == kernel:  # one output cell: the whole grid is the patch
        patches = x.permute(2, 0, 1, 3).reshape(1, 1, batch, kernel * kernel * channels)
    elif torch.is_grad_enabled() and x.requires_grad:
        patches = _Im2col.apply(x, kernel)
    else:
        patches = _im2col(x, kernel)
    return nn.functional.linear(patches, weight, conv.bias)


def batch_norm_cells_first(x: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    """``norm`` on x [..., C]: statistics over every cell of every grid, as BatchNorm2d."""
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:  # BatchNorm2d's cumulative moving average
            momentum = 1.0 / float(norm.num_batches_tracked)
    out = nn.functional.batch_norm(
        x.reshape(-1, x.shape[-1]),
        norm.running_mean,
        norm.running_var,
        norm.weight,
        norm.bias,
        norm.training or not norm.track_running_stats,
        momentum,
        norm.eps,
    )
    return out.reshape(x.shape)


@cache
def _winograd_matrices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kron(B^T, B^T) [25, 25], kron(G, G) [25, 9], kron(A^T, A^T) [9, 25] for F(3, 3).

    Toom-Cook: E_n evaluates a polynomial of n coefficients at the points (and the leading
    coefficient at infinity); the correlation of d (5) with g (3) is
    E_3^T [(E_3 g) . (E_5^-T d)], so A^T = E_3^T, G = E_3, B^T = E_5^-T.
    """

    def evaluation(n: int) -> np.ndarray:
        rows = [[p**k for k in range(n)] for p in _WINOGRAD_POINTS] + [[0.0] * (n - 1) + [1.0]]
        return np.array(rows)

    data_t = np.linalg.inv(evaluation(5)).T
    weight_t = output_t = evaluation(3)
    return np.kron(data_t, data_t), np.kron(weight_t, weight_t), np.kron(output_t.T, output_t.T)


def _im2col(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """x [H, W, B, C] -> patches [H', W', B, kh * kw * C] (kh, kw, C order)."""
    patches = x.unfold(0, kernel, 1).unfold(1, kernel, 1).permute(0, 1, 2, 4, 5, 3)
    return patches.reshape(*patches.shape[:3], -1)


class _Im2col(torch.autograd.Function):
    """_im2col with a backward of k * k strided additions: autograd's generic unfold
    backward took about a seventh of a CosRec training step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: int) -> torch.Tensor:  # type: ignore[override]
        ctx.kernel, ctx.shape = kernel, x.shape
        return _im2col(x, kernel)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        kernel = ctx.kernel
        out_h, out_w, batch, _ = grad.shape
        grad = grad.reshape(out_h, out_w, batch, kernel, kernel, -1)
        grad_x = grad.new_zeros(ctx.shape)
        for row in range(kernel):
            for col in range(kernel):
                grad_x[row : row + out_h, col : col + out_w] += grad[:, :, :, row, col]
        return grad_x, None
