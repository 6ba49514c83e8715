"""`cosrec train`: train with honest epoch selection, evaluate, export a bundle."""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cosrec.commands.common import (
    CommandParser,
    UsageError,
    fraction,
    int_list,
    log_line,
    non_negative_float,
    positive_float,
    positive_int,
    run_command,
)
from cosrec.commands.training_options import (
    add_data_arguments,
    add_run_arguments,
    load_splits_from_args,
    train_config_from_args,
)

# The networks `cosrec train` offers, with the network settings each one accepts.
TRAINABLE_MODELS = {
    "cosrec": ("block_channels", "fc_dim", "first_kernel"),
    "cosrec-base": ("hidden_dim",),
}


def channels(text: str) -> list[int]:
    values = int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"channels must be positive, got {text!r}")
    return values


def _parser() -> CommandParser:
    parser = CommandParser(prog="cosrec train", description="train, evaluate and export a bundle")
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="the bundle directory")
    parser.add_argument("--model", choices=list(TRAINABLE_MODELS), default="cosrec")
    add_run_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=512)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--l2", type=non_negative_float, default=5e-6, help="weight decay")
    parser.add_argument("--d", type=positive_int, default=50, help="embedding size")
    parser.add_argument("--L", type=positive_int, default=5, help="items the network reads")
    parser.add_argument("--block-channels", type=channels, help="cosrec: e.g. 128,256")
    parser.add_argument("--fc-dim", type=positive_int, help="cosrec: default 150")
    parser.add_argument("--hidden-dim", type=positive_int, help="cosrec-base: default 100")
    parser.add_argument(
        "--first-kernel",
        type=positive_int,
        help="cosrec: the first convolution's kernel (default 1; L spans the whole grid, Fig. 3)",
    )
    parser.add_argument("--dropout", type=fraction, help="default 0.5")
    parser.add_argument("--T", type=positive_int, default=3, help="targets per instance")
    parser.add_argument("--negatives", type=positive_int, default=3)
    parser.add_argument("--checkpoint", type=Path, help="default: OUT/checkpoint.pt")
    return parser


def _hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    """The network settings given on the command line; the model's defaults for the rest."""
    given = {"d": args.d, "dropout": args.dropout}
    for name in ("block_channels", "fc_dim", "hidden_dim", "first_kernel"):
        value = getattr(args, name)
        if value is not None and name not in TRAINABLE_MODELS[args.model]:
            raise UsageError(f"--{name.replace('_', '-')} does not apply to {args.model}")
        given[name] = value
    return {name: value for name, value in given.items() if value is not None}


def train_main(argv: list[str]) -> int:
    parser = _parser()

    def body() -> int:
        from training.checkpoint import save_checkpoint
        from training.export import DataSummary, check_replaceable, export_bundle
        from training.pipeline import plot_history, run_pipeline

        args = parser.parse_args(argv)
        config = train_config_from_args(
            args,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.l2,
            negatives=args.negatives,
            L=args.L,
            T=args.T,
        )
        check_replaceable(args.out)  # before training, not after
        hyperparameters = _hyperparameters(args)
        splits = load_splits_from_args(args)
        result = run_pipeline(
            splits, args.model, hyperparameters, config, eval_every=args.eval_every, log=log_line
        )
        figures = result.figures()
        data = DataSummary.of(result.train_data)
        bundle = export_bundle(result.model, data, args.out, figures)
        checkpoint = args.checkpoint or bundle / "checkpoint.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(checkpoint, result.model, data)
        report = {
            "model": args.model,
            "hyperparameters": result.model.hyperparameters(),
            "config": asdict(config),
            **figures,
            **result.timings(),
            "history": result.history(),
            "command": shlex.join(["cosrec", "train", *argv]),
        }
        (bundle / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_history(result, bundle / "training.png")
        print(f"bundle: {bundle}")
        print(f"checkpoint: {checkpoint}")
        for name, metrics in figures.items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch")
            print(f"{name} (epoch {metrics['epoch']}): {shown}")
        return 0

    return run_command(parser.prog, body)
