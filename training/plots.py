"""`cosrec plot filters | history`: the paper's Figure 3, and loss and MAP per epoch.

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

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.cli import CommandParser, UsageError, run_command


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


def _filter_indices(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if min(indices) < 0:
        raise argparse.ArgumentTypeError(f"filter indices must be non-negative, got {text!r}")
    return indices


def _filters_command(args: argparse.Namespace) -> None:
    from training.checkpoint import load_checkpoint

    if not args.checkpoint.is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such file")
    model = load_checkpoint(args.checkpoint)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise UsageError(f"{args.checkpoint}: a {model.name} model has no pairwise convolution")
    weight = blocks[0].conv1.weight.detach().numpy()
    maps = pair_weight_maps(weight, model.L)
    filters = args.filters if args.filters is not None else list(range(min(8, len(maps))))
    if max(filters) >= len(maps):
        raise UsageError(f"--filters: the first convolution has only {len(maps)} filters")
    kernel = weight.shape[2]
    title = f"{model.name}: first {kernel}x{kernel} convolution, weight norm per item pair"
    plot_filters(maps, filters, args.out, title)


def _history_command(args: argparse.Namespace) -> None:
    try:
        report = json.loads(args.metrics.read_text())
    except FileNotFoundError:
        raise UsageError(f"--metrics {args.metrics}: no such file") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"--metrics {args.metrics}: not JSON ({error})") from None
    history = report.get("history") if isinstance(report, dict) else None
    if not isinstance(history, dict) or not (
        history.get("validation_run") or history.get("test_run")
    ):
        raise UsageError(f"--metrics {args.metrics}: no per-epoch history in it")
    selected = report.get("validation_selected", {}).get("epoch")
    plot_training_history(
        history.get("validation_run", []), history.get("test_run", []), selected, args.out
    )


def plot_main(argv: list[str]) -> int:
    parser = CommandParser(prog="cosrec plot", description="draw a model's filters or a history")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    filters = commands.add_parser(
        "filters", help="first-convolution filters as per-pair heat maps (paper, Figure 3)"
    )
    filters.add_argument("--checkpoint", type=Path, required=True, help="a CosRec checkpoint")
    filters.add_argument("--out", type=Path, required=True, help="the PNG to write")
    filters.add_argument(
        "--filters", type=_filter_indices, help="filter indices, e.g. 0,5 (default: the first 8)"
    )
    history = commands.add_parser("history", help="loss and validation MAP per epoch")
    history.add_argument(
        "--metrics", type=Path, required=True, help="metrics.json of `cosrec train` or compare"
    )
    history.add_argument("--out", type=Path, required=True, help="the PNG to write")

    def body() -> int:
        args = parser.parse_args(argv)
        if args.command == "filters":
            _filters_command(args)
        else:
            _history_command(args)
        print(f"wrote {args.out}")
        return 0

    return run_command(parser.prog, body)
