"""Options that `cosrec train` and `cosrec compare` share: where the data comes from, and the
training run's settings."""

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


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings of a seeded training run on a device."""
    parser.add_argument("--epochs", type=positive_int, default=40, help="the epoch budget")
    parser.add_argument("--eval-every", type=positive_int, default=1, help="epochs per MAP")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training")
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
        generic_user_rate=args.generic_user_rate,
        progress=not args.no_progress,
        **settings,
    )
