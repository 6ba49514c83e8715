"""`cosrec tune`: a hyper-parameter search per model family on the validation split only, then
one retrain on the 80% split measured on test (training.tune).

Writes, in OUT: `tune.json` (per family: the chosen settings, its search with every trial, the
test figures `validation_selected` and `paper_protocol`, machine and command; `picked`: the
family with the best validation MAP, what `cosrec train --model auto` would export),
`tune.md` (a table), and per family `MODEL/checkpoint.pt` and `MODEL/metrics.json` (with the
per-epoch history).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from cosrec.commands.common import CommandParser, UsageError, log_line, run_command
from cosrec.commands.compare import model_names
from cosrec.commands.training_options import (
    add_budget_arguments,
    add_data_arguments,
    add_run_arguments,
    budget_from_args,
    load_splits_from_args,
    train_config_from_args,
)


def _parser() -> CommandParser:
    parser = CommandParser(
        prog="cosrec tune",
        description="search each model's settings on the validation split, retrain, measure",
    )
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument(
        "--models", type=model_names, default="all", help="all, or e.g. cosrec,caser,fpmc"
    )
    add_run_arguments(parser, epochs_help="the most epochs a trial trains", eval_every=False)
    add_budget_arguments(parser)
    return parser


def markdown(entries: dict[str, dict[str, Any]], picked: str, source: str) -> str:
    from training.compare import DISPLAY_NAMES

    lines = [
        f"# Tuned on {source}",
        "",
        "| model | validation MAP (search) | test MAP (validation-selected) | test MAP (paper"
        " protocol) | epoch | trials (pruned) | search s |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, entry in entries.items():
        search, test = entry["search"], entry["validation_selected"]
        label = DISPLAY_NAMES.get(name, name) + (" (picked)" if name == picked else "")
        lines.append(
            f"| {label} | {search['validation_map']:.4f} | {test['map']:.4f}"
            f" | {entry['paper_protocol']['map']:.4f} | {entry['selected_epoch']}"
            f" | {search['trials_run']} ({search['trials_pruned']}) | {search['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def tune_main(argv: list[str]) -> int:
    parser = _parser()

    def body() -> int:
        from cosrec.machine import describe_device
        from training.checkpoint import save_checkpoint
        from training.export import DataSummary
        from training.tune import choose_family, report, tune_model

        args = parser.parse_args(argv)
        config = train_config_from_args(args)
        budget = budget_from_args(args)
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {args.out}: not a directory")
        splits = load_splits_from_args(args)
        data = DataSummary.of(splits.test.train)
        command = shlex.join(["cosrec", "tune", *argv])
        machine = describe_device(args.device)
        entries: dict[str, dict[str, Any]] = {}
        for name in args.models:
            log_line(f"--- {name}")
            found, result = tune_model(splits, name, budget, config, log_line)
            entry = {**report(found, result), "machine": machine, "command": command}
            history = entry.pop("history")
            entries[name] = entry
            directory = args.out / name
            directory.mkdir(parents=True, exist_ok=True)
            save_checkpoint(directory / "checkpoint.pt", result.model, data)
            metrics = {**entry, "history": history}
            (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        picked = choose_family({n: e["search"]["validation_map"] for n, e in entries.items()})
        source = "generated data" if args.synthetic else str(args.data)
        (args.out / "tune.json").write_text(
            json.dumps({"picked": picked, "models": entries}, indent=2) + "\n"
        )
        (args.out / "tune.md").write_text(markdown(entries, picked, source))
        for name, entry in entries.items():
            figures = entry["validation_selected"]
            print(
                f"{name}: validation MAP {entry['search']['validation_map']:.4f},"
                f" test MAP {figures['map']:.4f} (validation-selected, epoch {figures['epoch']})"
            )
        print(f"picked by validation MAP: {picked}")
        print(f"wrote {args.out / 'tune.md'} and {args.out / 'tune.json'}")
        return 0

    return run_command(parser.prog, body)
