"""`cosrec compare`: the paper's Table 3 on any data (training.compare).

Writes, in OUT: `comparison.json` (one object per model: figures of both protocols, timings,
settings), `comparison.md` (the figures shaped like Table 3: metrics down, models across), and
per model `MODEL/checkpoint.pt`, `MODEL/metrics.json` (with the per-epoch history) and
`MODEL/training.png`.
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cosrec.commands.common import CommandParser, UsageError, log_line, run_command
from cosrec.commands.training_options import (
    add_data_arguments,
    add_run_arguments,
    load_splits_from_args,
    train_config_from_args,
)


def model_names(text: str) -> list[str]:
    """`all` (every registered model, in Table 3's order) or a comma-separated list."""
    from model import MODELS
    from training.compare import paper_ordered_models

    if text == "all":
        return paper_ordered_models()
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names:
        choices = ", ".join(["all", *MODELS])
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or repr(text)} (choose from: {choices})"
        )
    return list(dict.fromkeys(names))  # each model once, in the order given


def _parser() -> CommandParser:
    parser = CommandParser(
        prog="cosrec compare", description="train and evaluate models, as Table 3"
    )
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument(
        "--models", type=model_names, default="all", help="all, or e.g. cosrec,caser,fpmc"
    )
    add_run_arguments(parser)
    return parser


def compare_main(argv: list[str]) -> int:
    parser = _parser()

    def body() -> int:
        from cosrec.machine import describe_device
        from training.checkpoint import save_checkpoint
        from training.compare import comparison_markdown, markdown_table, measure_model
        from training.export import DataSummary
        from training.plots import plot_training_history

        args = parser.parse_args(argv)
        config = train_config_from_args(args)
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {args.out}: not a directory")
        splits = load_splits_from_args(args)
        data = DataSummary.of(splits.test.train)
        command = shlex.join(["cosrec", "compare", *argv])
        machine = describe_device(args.device)
        results: dict[str, dict[str, Any]] = {}
        for name in args.models:  # argparse applied model_names to the default, too
            log_line(f"--- {name}")
            model, report = measure_model(splits, name, config, args.eval_every, log_line)
            history = report.pop("history")
            results[name] = {
                "model": name,
                "hyperparameters": model.hyperparameters(),
                "config": asdict(config),
                **report,
                "machine": machine,
                "command": command,
            }
            directory = args.out / name
            directory.mkdir(parents=True, exist_ok=True)
            save_checkpoint(directory / "checkpoint.pt", model, data)
            metrics = {**results[name], "history": history}
            (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            if history["test_run"]:
                selected = report["validation_selected"]["epoch"]
                plot_training_history(
                    history["validation_run"],
                    history["test_run"],
                    selected,
                    directory / "training.png",
                )
        source = "generated data" if args.synthetic else str(args.data)
        (args.out / "comparison.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "comparison.md").write_text(comparison_markdown(results, source))
        print(markdown_table(results, "paper_protocol"))
        print(f"wrote {args.out / 'comparison.md'} and {args.out / 'comparison.json'}")
        return 0

    return run_command(parser.prog, body)
