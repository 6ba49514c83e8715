"""Options that `cosrec train`, `cosrec compare` and `cosrec tune` share: where the data comes
from, the training run's settings, the search budget."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosrec.commands.common import UsageError, fraction, positive_int
from training.readers import FORMATS

if TYPE_CHECKING:  # the heavy imports wait until a command runs
    from training.fit import TrainConfig
    from training.split import Splits


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data",
        help="a split directory, an interaction log, or (--format redis) the service's Redis URL",
    )
    source.add_argument(
        "--synthetic", action="store_true", help="generated data (training.synthetic)"
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="caser", help="format of a --data file"
    )
    parser.add_argument("--min-item-count", type=int, default=5, help="for a --data file")
    parser.add_argument("--min-user-count", type=int, default=5, help="for a --data file")


def add_run_arguments(
    parser: argparse.ArgumentParser, epochs_help: str = "the epoch budget", eval_every: bool = True
) -> None:
    """The settings of a seeded training run on a device."""
    parser.add_argument("--epochs", type=positive_int, default=40, help=epochs_help)
    if eval_every:
        parser.add_argument("--eval-every", type=positive_int, default=1, help="epochs per MAP")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training")
    parser.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="on CUDA, launch every kernel of a step eagerly instead of replaying one graph",
    )
    parser.add_argument(
        "--generic-user-rate",
        type=fraction,
        default=0.0,
        help="fraction of training instances given the generic user (default 0: the generic "
        "user, index 0, is then the near-zero embedding weight decay leaves, which served "
        "held-out ML-1M users better than 0.1 did; see README)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def load_splits_from_args(args: argparse.Namespace) -> Splits:
    from training.split import load_splits, splits_of

    if args.synthetic:
        from training.synthetic import generate_log

        return splits_of(generate_log())
    if args.format != "redis" and not Path(args.data).exists():
        raise UsageError(f"--data {args.data}: no such file or directory")
    return load_splits(args.data, args.format, args.min_item_count, args.min_user_count)


def train_config_from_args(args: argparse.Namespace, **settings: Any) -> TrainConfig:
    """The TrainConfig of `add_run_arguments`' options, plus `settings`."""
    import torch

    from training.fit import TrainConfig

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        bf16=args.bf16,
        cuda_graphs=not args.no_cuda_graphs,
        generic_user_rate=args.generic_user_rate,
        progress=not args.no_progress,
        **settings,
    )


BUDGET_DEFAULTS = {"trials": 10, "time_budget": 600, "patience": 3}


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The search budget of `cosrec tune` and `cosrec train --model auto`, per model family
    (the per-trial epoch cap is --epochs)."""
    group = parser.add_argument_group("search budget (per model family, the same for each)")
    group.add_argument("--trials", type=positive_int, help=f"default {BUDGET_DEFAULTS['trials']}")
    group.add_argument(
        "--time-budget",
        type=positive_int,
        help="seconds of search, training and validation together (default"
        f" {BUDGET_DEFAULTS['time_budget']})",
    )
    group.add_argument(
        "--patience",
        type=positive_int,
        help="epochs without a better validation MAP before a trial stops (default"
        f" {BUDGET_DEFAULTS['patience']})",
    )


def budget_from_args(args: argparse.Namespace) -> Any:
    """The `training.tune.Budget` of `add_budget_arguments` (and --epochs: per trial)."""
    from training.tune import Budget

    given = {name: getattr(args, name) for name in BUDGET_DEFAULTS}
    values = {name: BUDGET_DEFAULTS[name] if v is None else v for name, v in given.items()}
    return Budget(
        trials=values["trials"],
        seconds=float(values["time_budget"]),
        max_epochs=args.epochs,
        patience=values["patience"],
    )
