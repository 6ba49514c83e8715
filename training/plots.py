"""The paper's Figure 3 (first-layer filters per item pair) and loss and MAP per epoch.

Per-pair weight of a first-layer filter (what a cell of `plot filters` shows). CosRec's first
convolution reads the pairwise tensor, whose cell (i, j) holds [e_i ; e_j] (2d channels), so a
filter has a 2d-vector of weights W[:, a, b] per kernel offset (a, b), not one number. A cell
shows the Euclidean norm of that vector: embedding axes have no meaning or sign of their own
(any rotation of the embedding space, applied to the weights too, gives the same network), and
the norm is the one summary of the vector that such a rotation leaves unchanged. With the
kernel spanning the whole L x L grid (`first_kernel=L`, the paper's figure) offset (i, j) IS
pair (i, j). A smaller kernel slides over the grid; pair (i, j) then gets the sum of the norms
of every offset that lands on it. For the default 1x1 kernel that sum is the same for every
pair: the first layer treats all pairs alike, and the map is flat, which is the honest answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pair_weight_maps(weight: np.ndarray, L: int) -> np.ndarray:
    """First-convolution weights [C, 2d, k, k] -> per-pair weights [C, L, L] (module docstring)."""
    channels, _, kernel, _ = weight.shape
    if kernel > L:
        raise ValueError(f"a {kernel}x{kernel} kernel does not fit an {L}x{L} grid")
    norms = np.linalg.norm(weight, axis=1)  # [C, k, k]
    maps = np.zeros((channels, L, L))
    for row in range(L - kernel + 1):  # every position the (unpadded) kernel is applied at
        for column in range(L - kernel + 1):
            maps[:, row : row + kernel, column : column + kernel] += norms
    return maps


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    from matplotlib import pyplot

    return pyplot


def plot_filters(maps: np.ndarray, filters: Sequence[int], path: str | Path, title: str) -> None:
    """One heat map per chosen filter; darker is a larger weight, as in the paper's Figure 3."""
    plt = _pyplot()
    L = maps.shape[1]
    columns = min(4, len(filters))
    rows = -(-len(filters) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows + 0.6), squeeze=False)
    ticks = np.arange(L)
    labels = [str(k + 1) for k in ticks]  # 1 = oldest of the L items, L = the latest
    for axis in axes.flat[len(filters) :]:
        axis.axis("off")
    for axis, index in zip(axes.flat, filters, strict=False):
        image = axis.imshow(maps[index], cmap="Greys", origin="upper")
        axis.set(title=f"filter {index}", xlabel="item j", ylabel="item i")
        axis.set_xticks(ticks, labels)
        axis.set_yticks(ticks, labels)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_training_history(
    validation_run: Sequence[dict[str, Any]],
    test_run: Sequence[dict[str, Any]],
    selected_epoch: int | None,
    path: str | Path,
) -> None:
    """Training loss (both runs) and MAP on the measured epochs, per epoch.

    Each record is a dict with `epoch`, `loss` and `metrics` (None on unmeasured epochs), as
    `training.pipeline.PipelineResult.history()` writes them.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    figure, (loss_axes, map_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for records, label in ((validation_run, "validation"), (test_run, "test")):
        if not records:
            continue
        epochs = [r["epoch"] for r in records]
        loss_axes.plot(epochs, [r["loss"] for r in records], label=f"{label} run")
        measured = [r for r in records if r.get("metrics")]
        map_axes.plot(
            [r["epoch"] for r in measured],
            [r["metrics"]["map"] for r in measured],
            marker="o",
            label=f"{label} MAP",
        )
    if selected_epoch is not None:
        map_axes.axvline(selected_epoch, color="grey", linestyle="--", label="selected epoch")
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="loss")
    map_axes.set(xlabel="epoch", ylabel="MAP", title="MAP")
    for axes in (loss_axes, map_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
