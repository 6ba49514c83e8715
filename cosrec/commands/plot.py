"""`cosrec plot filters | history`: the paper's Figure 3, and loss and MAP per epoch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cosrec.commands.common import CommandParser, UsageError, int_list, run_command


def _filters(args: argparse.Namespace) -> None:
    from training.checkpoint import load_checkpoint
    from training.plots import pair_weight_maps, plot_filters

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


def _history(args: argparse.Namespace) -> None:
    from training.plots import plot_training_history

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
        "--filters", type=int_list, help="filter indices, e.g. 0,5 (default: the first 8)"
    )
    history = commands.add_parser("history", help="loss and validation MAP per epoch")
    history.add_argument(
        "--metrics", type=Path, required=True, help="metrics.json of `cosrec train` or compare"
    )
    history.add_argument("--out", type=Path, required=True, help="the PNG to write")

    def body() -> int:
        args = parser.parse_args(argv)
        if args.command == "filters":
            _filters(args)
        else:
            _history(args)
        print(f"wrote {args.out}")
        return 0

    return run_command(parser.prog, body)
