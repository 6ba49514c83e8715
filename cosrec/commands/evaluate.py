"""`cosrec evaluate`: a checkpoint or a bundle on a split, with the paper's protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cosrec.commands.common import CommandParser, UsageError, run_command


def _split_dir(path: Path) -> Path:
    """A split root (with test/) means its test split; otherwise `path` holds train/test."""
    if not path.is_dir():
        raise UsageError(f"--split {path}: not a directory")
    return path / "test" if (path / "test").is_dir() else path


def _metrics(args: Any) -> dict[str, Any]:
    from training.evaluation import evaluate
    from training.split import read_split

    split = read_split(_split_dir(args.split))
    if args.checkpoint is not None:
        from training.checkpoint import load_checkpoint
        from training.scoring import torch_scorer

        model = load_checkpoint(args.checkpoint)
        data = split.train
        if (model.num_users, model.num_items) != (data.num_users, data.num_items):
            raise UsageError(
                f"{args.checkpoint}: trained on {model.num_users} users and {model.num_items}"
                f" items, the split has {data.num_users} and {data.num_items}"
            )
        return evaluate(torch_scorer(model), split)
    from contract.bundle import load_bundle
    from training.scoring import bundle_scorer

    bundle = load_bundle(args.bundle, precision=args.precision)
    return evaluate(bundle_scorer(bundle, split.train.users, split.train.items), split)


def evaluate_main(argv: list[str]) -> int:
    parser = CommandParser(prog="cosrec evaluate", description="score a checkpoint or bundle")
    parser.add_argument(
        "--split", type=Path, required=True, help="a split root (uses test/) or a split part"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--bundle", type=Path)
    parser.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        default="fp32",
        help="a bundle's graph to score with (int8: what COSREC_PRECISION=int8 serves)",
    )

    def body() -> int:
        print(json.dumps(_metrics(parser.parse_args(argv)), indent=2))
        return 0

    return run_command(parser.prog, body)
