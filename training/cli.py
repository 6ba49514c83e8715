"""`cosrec split | train | evaluate | export`: argv in, exit status out.

Bad arguments and unreadable data end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from training.readers import FORMATS, DataFormatError

if TYPE_CHECKING:  # imported where used: `cosrec split` needs no torch
    from training.dataset import Sequences, Split
    from training.fit import TrainConfig
    from training.pipeline import Splits

USAGE_ERROR = 2


class UsageError(Exception):
    """A bad argument or unreadable input: reported as one line, exit status 2."""


class CommandParser(argparse.ArgumentParser):
    """argparse whose errors raise (one line, reported by `run_command`) instead of usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def _channels(text: str) -> list[int]:
    try:
        channels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not channels or min(channels) < 1:
        raise argparse.ArgumentTypeError(f"channels must be positive, got {text!r}")
    return channels


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    try:
        return int(body() or 0)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except (UsageError, DataFormatError, ValueError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return USAGE_ERROR


def log_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_data_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
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


def load_splits_from_args(args: argparse.Namespace) -> Splits:
    from training.pipeline import load_splits, splits_of

    if args.synthetic:
        from training.synthetic import generate_log

        return splits_of(generate_log())
    if args.format != "redis" and not Path(args.data).exists():
        raise UsageError(f"--data {args.data}: no such file or directory")
    return load_splits(args.data, args.format, args.min_item_count, args.min_user_count)


def train_config_from_args(args: argparse.Namespace, **settings: Any) -> TrainConfig:
    """The TrainConfig of the options train, compare and bench/ml1m.py share, plus `settings`."""
    from training.fit import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        bf16=args.bf16,
        generic_user_rate=args.generic_user_rate,
        progress=not args.no_progress,
        **settings,
    )


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")


# --- cosrec split -------------------------------------------------------------------------


def split_main(argv: list[str]) -> int:
    parser = CommandParser(prog="cosrec split", description="split a log into the paper's splits")
    parser.add_argument("--data", required=True, help="a log file, or (redis) a Redis URL")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--min-item-count", type=int, default=5)
    parser.add_argument("--min-user-count", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)

    def body() -> int:
        from training.split import prepare_split

        args = parser.parse_args(argv)
        seqs = prepare_split(
            args.data, args.format, args.out, args.min_item_count, args.min_user_count
        )
        print(
            f"wrote {args.out}/test and {args.out}/validation: {seqs.num_users} users,"
            f" {seqs.num_items} items, {seqs.num_interactions} actions"
        )
        return 0

    return run_command(parser.prog, body)


# --- cosrec train -------------------------------------------------------------------------


# The networks `cosrec train` offers, with the network settings each one accepts.
TRAINABLE_MODELS = {
    "cosrec": ("block_channels", "fc_dim", "first_kernel"),
    "cosrec-base": ("hidden_dim",),
}


def _train_parser() -> CommandParser:
    parser = CommandParser(prog="cosrec train", description="train, evaluate and export a bundle")
    add_data_arguments(parser, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the bundle directory")
    parser.add_argument("--model", choices=list(TRAINABLE_MODELS), default="cosrec")
    parser.add_argument("--epochs", type=positive_int, default=40, help="the epoch budget")
    parser.add_argument("--batch-size", type=positive_int, default=512)
    parser.add_argument("--lr", type=_positive_float, default=1e-3)
    parser.add_argument("--l2", type=_non_negative_float, default=5e-6, help="weight decay")
    parser.add_argument("--d", type=positive_int, default=50, help="embedding size")
    parser.add_argument("--L", type=positive_int, default=5, help="items the network reads")
    parser.add_argument("--block-channels", type=_channels, help="cosrec: e.g. 128,256")
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
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training")
    parser.add_argument("--eval-every", type=positive_int, default=1, help="epochs per MAP")
    parser.add_argument(
        "--generic-user-rate",
        type=fraction,
        default=0.0,
        help="fraction of training instances given the generic user (default 0: the generic "
        "user, index 0, is then the near-zero embedding weight decay leaves, which served "
        "held-out ML-1M users better than 0.1 did; see README)",
    )
    parser.add_argument("--checkpoint", type=Path, help="default: OUT/checkpoint.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
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
    parser = _train_parser()

    def body() -> int:
        from training.checkpoint import save_checkpoint
        from training.export import check_replaceable, export_bundle
        from training.pipeline import plot_history, run_pipeline

        args = parser.parse_args(argv)
        check_device(args.device)
        check_replaceable(args.out)  # before training, not after
        splits = load_splits_from_args(args)
        config = train_config_from_args(
            args,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.l2,
            negatives=args.negatives,
            L=args.L,
            T=args.T,
        )
        result = run_pipeline(
            splits,
            args.model,
            _hyperparameters(args),
            config,
            eval_every=args.eval_every,
            log=log_line,
        )
        figures = result.figures()
        bundle = export_bundle(result.model, result.train_data, args.out, figures)
        checkpoint = args.checkpoint or bundle / "checkpoint.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(checkpoint, result.model)
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


# --- cosrec evaluate ----------------------------------------------------------------------


def _split_dir(path: Path) -> Path:
    """A split root (with test/) means its test split; otherwise `path` holds train/test."""
    if not path.is_dir():
        raise UsageError(f"--split {path}: not a directory")
    return path / "test" if (path / "test").is_dir() else path


def _check_trained_on(checkpoint: Path, model: Any, data: Sequences, what: str) -> None:
    """A checkpoint is sized for its training data's users and items; refuse other data."""
    if (model.num_users, model.num_items) != (data.num_users, data.num_items):
        raise UsageError(
            f"{checkpoint}: trained on {model.num_users} users and {model.num_items} items,"
            f" the {what} has {data.num_users} and {data.num_items}"
        )


def _checkpoint_metrics(checkpoint: Path, split: Split) -> dict[str, Any]:
    from training.checkpoint import load_checkpoint
    from training.evaluation import evaluate
    from training.scoring import torch_scorer

    model = load_checkpoint(checkpoint)
    _check_trained_on(checkpoint, model, split.train, "split")
    return evaluate(torch_scorer(model), split, int(model.hyperparameters()["L"]))


def _bundle_metrics(directory: Path, split: Split) -> dict[str, Any]:
    from training.bundle_reader import bundle_scorer, read_bundle
    from training.evaluation import evaluate

    bundle = read_bundle(directory)
    scorer = bundle_scorer(bundle, split.train.users, split.train.items)
    return evaluate(scorer, split, bundle.sequence_length)


def evaluate_main(argv: list[str]) -> int:
    parser = CommandParser(prog="cosrec evaluate", description="score a checkpoint or bundle")
    parser.add_argument(
        "--split", type=Path, required=True, help="a split root (uses test/) or a split part"
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path)
    model.add_argument("--bundle", type=Path)

    def body() -> int:
        from training.split import read_split

        args = parser.parse_args(argv)
        split = read_split(_split_dir(args.split))
        if args.checkpoint is not None:
            metrics = _checkpoint_metrics(args.checkpoint, split)
        else:
            metrics = _bundle_metrics(args.bundle, split)
        print(json.dumps(metrics, indent=2))
        return 0

    return run_command(parser.prog, body)


# --- cosrec export ------------------------------------------------------------------------


def export_main(argv: list[str]) -> int:
    parser = CommandParser(prog="cosrec export", description="export a checkpoint as a bundle")
    parser.add_argument("--checkpoint", type=Path, required=True)
    add_data_arguments(parser, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the bundle directory")
    parser.add_argument("--metrics", type=Path, help="a JSON file to put in the manifest")

    def body() -> int:
        from training.checkpoint import load_checkpoint
        from training.export import export_bundle

        args = parser.parse_args(argv)
        model = load_checkpoint(args.checkpoint)
        # What `cosrec train` trained the exported model on: the test split's train part.
        data = load_splits_from_args(args).test.train
        _check_trained_on(args.checkpoint, model, data, "data")
        metrics = json.loads(args.metrics.read_text()) if args.metrics else None
        bundle = export_bundle(model, data, args.out, metrics)
        print(f"bundle: {bundle}")
        return 0

    return run_command(parser.prog, body)
