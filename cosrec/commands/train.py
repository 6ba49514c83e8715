"""`cosrec train`: train with honest epoch selection, evaluate, export a bundle.

`--model auto` searches every model family's settings on the validation split within a stated
budget (training.tune, as `cosrec tune`), picks the family with the best validation MAP,
retrains it on the 80% split and exports it like a fixed model.
"""

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
    add_budget_arguments,
    add_data_arguments,
    add_run_arguments,
    budget_from_args,
    load_splits_from_args,
    train_config_from_args,
)
from training.losses import DEFAULT_NEGATIVES, LOSSES

# The networks `cosrec train` offers, with the network settings each one accepts.
TRAINABLE_MODELS = {
    "cosrec": ("block_channels", "fc_dim", "first_kernel"),
    "cosrec-base": ("hidden_dim",),
}
AUTO = "auto"  # every family of model.MODELS searched (training.tune), the best exported
# What --model auto searches (training.search_space): giving one of them is a usage error.
SEARCHED = ("lr", "l2", "lr_decay", "d", "L", "T", "negatives", "loss", "dropout",
            "block_channels", "fc_dim", "hidden_dim")  # fmt: skip
DEFAULTS = {"lr": 1e-3, "l2": 5e-6, "lr_decay": 1.0, "d": 50, "L": 5, "T": 3, "loss": "bce"}
BUDGET = ("trials", "time_budget", "patience")  # only for --model auto


def channels(text: str) -> list[int]:
    values = int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"channels must be positive, got {text!r}")
    return values


def _parser() -> CommandParser:
    parser = CommandParser(prog="cosrec train", description="train, evaluate and export a bundle")
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="the bundle directory")
    parser.add_argument(
        "--model",
        choices=[*TRAINABLE_MODELS, AUTO],
        default="cosrec",
        help="auto: search every model family on the validation split, export the best",
    )
    add_run_arguments(parser, epochs_help="the epoch budget (auto: per trial)")
    add_budget_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=512)
    parser.add_argument(
        "--loss",
        choices=LOSSES,
        help="bce (the paper's Eq. 1, the default), softmax (over every item), sampled-softmax",
    )
    parser.add_argument(
        "--negatives", type=positive_int, help="per instance (default 3; sampled-softmax 100)"
    )
    parser.add_argument("--lr", type=positive_float, help="default 1e-3")
    parser.add_argument(
        "--lr-decay", type=fraction, help="lr multiplied by this after every epoch (default 1)"
    )
    parser.add_argument("--l2", type=non_negative_float, help="weight decay (default 5e-6)")
    parser.add_argument("--d", type=positive_int, help="embedding size (default 50)")
    parser.add_argument("--L", type=positive_int, help="items the network reads (default 5)")
    parser.add_argument("--block-channels", type=channels, help="cosrec: e.g. 128,256")
    parser.add_argument("--fc-dim", type=positive_int, help="cosrec: default 150")
    parser.add_argument("--hidden-dim", type=positive_int, help="cosrec-base: default 100")
    parser.add_argument(
        "--first-kernel",
        type=positive_int,
        help="cosrec: the first convolution's kernel (default 1; L spans the whole grid, Fig. 3)",
    )
    parser.add_argument("--dropout", type=fraction, help="default 0.5")
    parser.add_argument("--T", type=positive_int, help="targets per instance (default 3)")
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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_auto(args: argparse.Namespace) -> None:
    given = [name for name in SEARCHED if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{_flag(given[0])} does not apply to --model auto: it is searched")
    if args.first_kernel is not None:
        raise UsageError("--first-kernel does not apply to --model auto")
    if args.eval_every != 1:
        raise UsageError("--eval-every does not apply to --model auto: trials measure every epoch")


def _fill_defaults(args: argparse.Namespace) -> None:
    """A fixed model's settings that were not given: the defaults of the README."""
    given = [name for name in BUDGET if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{_flag(given[0])} applies only to --model auto")
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.negatives is None:
        args.negatives = DEFAULT_NEGATIVES[args.loss]
    elif args.loss == "softmax":
        raise UsageError("--negatives does not apply to --loss softmax (it scores every item)")


def _auto(args: argparse.Namespace, splits: Any) -> tuple[Any, dict[str, Any]]:
    """Search every family, pick by validation MAP, retrain the winner: (result, report)."""
    from training.compare import paper_ordered_models
    from training.tune import choose_family, retrain, search

    config = train_config_from_args(args, batch_size=args.batch_size)
    budget = budget_from_args(args)
    searches = {}
    for name in paper_ordered_models():  # every family of model.MODELS
        log_line(f"--- {name}")
        searches[name] = search(splits.validation, name, budget, config, log_line)
    picked = choose_family({name: found.validation_map for name, found in searches.items()})
    log_line(f"picked {picked} by validation MAP {searches[picked].validation_map:.4f}")
    result = retrain(splits, searches[picked], log_line)
    auto = {
        "picked": picked,
        "budget_per_family": asdict(budget),
        "search_seconds": sum(found.seconds for found in searches.values()),
        "families": {name: found.summary() for name, found in searches.items()},
    }
    return result, {"config": asdict(searches[picked].config), "auto": auto}


def _start_distributed(args: argparse.Namespace) -> Any:
    """Under `torchrun --nproc_per_node N` (N > 1): joins the process group, gloo on CPU and
    NCCL on CUDA (training.distributed); None otherwise."""
    from training.distributed import start, torchrun_environment

    environment = torchrun_environment()
    if environment is None or environment[1] < 2:
        return None
    if args.model == AUTO:
        raise UsageError("--model auto does not run on several processes (torchrun)")
    train_config_from_args(args)  # --device cuda without CUDA fails here, on every rank
    process = start(args.device)
    if process is not None and process.is_main:
        log_line(
            f"data-parallel training on {process.world_size} processes ({process.backend}):"
            f" each takes {args.batch_size // process.world_size} rows of every global batch"
            f" of {args.batch_size}"
        )
    return process


def train_main(argv: list[str]) -> int:
    parser = _parser()

    def body() -> int:
        from training.checkpoint import save_checkpoint
        from training.distributed import follow_pipeline
        from training.export import DataSummary, check_replaceable, export_bundle
        from training.fit import training_path
        from training.pipeline import plot_history, run_pipeline

        args = parser.parse_args(argv)
        if args.model == AUTO:
            _check_auto(args)
        else:
            _fill_defaults(args)
        check_replaceable(args.out)  # before training, not after
        process = _start_distributed(args)  # under torchrun: one of several processes
        if args.model == AUTO:
            train_config_from_args(args)  # a bad --device fails before loading data
            splits = load_splits_from_args(args)
            result, extra = _auto(args, splits)
        else:
            config = train_config_from_args(
                args,
                batch_size=args.batch_size,
                lr=args.lr,
                weight_decay=args.l2,
                negatives=args.negatives,
                L=args.L,
                T=args.T,
                loss=args.loss,
                lr_decay=args.lr_decay,
            )
            hyperparameters = _hyperparameters(args)
            splits = load_splits_from_args(args)
            processes = 1 if process is None else process.world_size
            if process is None or process.is_main:
                log_line(f"training: {training_path(config, processes)}")
            if process is not None and not process.is_main:  # rank 0 evaluates and writes
                follow_pipeline(splits, args.model, hyperparameters, config)
                return 0
            result = run_pipeline(
                splits,
                args.model,
                hyperparameters,
                config,
                eval_every=args.eval_every,
                log=log_line,
            )
            extra = {"config": asdict(config)}
        figures = result.figures()
        data = DataSummary.of(result.train_data)
        bundle = export_bundle(result.model, data, args.out, figures)
        checkpoint = args.checkpoint or bundle / "checkpoint.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(checkpoint, result.model, data)
        report = {
            "model": result.model.name,
            "hyperparameters": result.model.hyperparameters(),
            **extra,
            **figures,
            **result.timings(),
            "history": result.history(),
            "command": shlex.join(["cosrec", "train", *argv]),
        }
        (bundle / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        if result.model.trainable:  # PopRec (a possible auto pick) has no epochs to plot
            plot_history(result, bundle / "training.png")
        if args.model == AUTO:
            print(f"picked by validation MAP: {result.model.name}")
        print(f"bundle: {bundle}")
        print(f"checkpoint: {checkpoint}")
        for name, metrics in figures.items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch")
            print(f"{name} (epoch {metrics['epoch']}): {shown}")
        return 0

    return run_command(parser.prog, body)
