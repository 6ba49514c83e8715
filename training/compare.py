"""`cosrec compare`: the paper's Table 3 on any data, every model through the same harness.

Each trainable model goes through `training.pipeline.run_pipeline` (the shared loop, the
paper's protocol and the validation-selected epoch); PopRec (`trainable = False`) only counts
the test split's training part. Writes, in OUT:

    comparison.json   one object per model: figures of both protocols, timings, settings
    comparison.md     the figures shaped like Table 3 (metrics down, models across)
    MODEL/checkpoint.pt, MODEL/metrics.json (with the per-epoch history), MODEL/training.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.cli import (
    CommandParser,
    UsageError,
    add_data_arguments,
    check_device,
    fraction,
    load_splits_from_args,
    log_line,
    positive_int,
    run_command,
    train_config_from_args,
)

if TYPE_CHECKING:  # the heavy imports wait until a command runs
    from torch import nn

    from training.fit import TrainConfig
    from training.pipeline import Log, Splits

# Table 3's column order; models not in the paper follow in the order given.
PAPER_ORDER = ("poprec", "bpr", "fmc", "fpmc", "gru4rec", "caser", "cosrec-base", "cosrec")
DISPLAY_NAMES = {
    "poprec": "PopRec",
    "bpr": "BPR",
    "fmc": "FMC",
    "fpmc": "FPMC",
    "gru4rec": "GRU4Rec",
    "caser": "Caser",
    "cosrec-base": "CosRec-base",
    "cosrec": "CosRec",
}
METRIC_LABELS = {
    "map": "MAP",
    "prec@1": "Prec@1",
    "prec@5": "Prec@5",
    "prec@10": "Prec@10",
    "recall@1": "Recall@1",
    "recall@5": "Recall@5",
    "recall@10": "Recall@10",
}
PROTOCOLS = {
    "paper_protocol": "paper protocol (best test MAP over the measured epochs)",
    "validation_selected": "epoch selected by validation MAP (the honest figure)",
}


def cpu_name() -> str:
    """The CPU model (Linux names it only in /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: str) -> str:
    """What the timings were measured on."""
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
        f" (torch {torch.__version__})"
    )


def model_names(text: str) -> list[str]:
    """`all` (every registered model, in Table 3's order) or a comma-separated list."""
    from model import MODELS

    if text == "all":
        return [name for name in PAPER_ORDER if name in MODELS] + [
            name for name in MODELS if name not in PAPER_ORDER
        ]
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names:
        choices = ", ".join(["all", *MODELS])
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or repr(text)} (choose from: {choices})"
        )
    return list(dict.fromkeys(names))  # each model once, in the order given


def count_popularity(splits: Splits, name: str, log: Log) -> tuple[nn.Module, dict[str, Any]]:
    """A model that counts (PopRec) on the test split: no epochs, so both protocols give the
    same figures."""
    from model import build_model
    from training.evaluation import evaluate
    from training.pipeline import metric_subset
    from training.scoring import torch_scorer

    train = splits.test.train
    model = build_model(name, train.num_users, train.num_items)
    model.fit_counts(train.sequences)
    started = time.perf_counter()
    metrics = evaluate(torch_scorer(model), splits.test, model.L)
    eval_seconds = time.perf_counter() - started
    figures = metric_subset(metrics) | {"epoch": 0}
    log(f"{name}: MAP {figures['map']:.4f} ({eval_seconds:.1f} s to evaluate)")
    report = {
        "paper_protocol": figures,
        "validation_selected": dict(figures),
        "epoch_seconds": None,  # nothing is trained
        "selected_epoch": 0,
        "paper_epoch": 0,
        "eval_seconds": eval_seconds,
        "history": {"validation_run": [], "test_run": []},
    }
    return model, report


def train_and_measure(
    splits: Splits, name: str, config: TrainConfig, eval_every: int, log: Log
) -> tuple[nn.Module, dict[str, Any]]:
    """A trainable model through the shared pipeline (both runs of training.pipeline)."""
    from training.pipeline import run_pipeline

    result = run_pipeline(splits, name, {}, config, eval_every=eval_every, log=log)
    report = {
        **result.figures(),
        **result.timings(),
        "selected_epoch": result.selected_epoch,
        "paper_epoch": result.paper_epoch,
        "history": result.history(),
    }
    return result.model, report


def markdown_table(results: dict[str, dict[str, Any]], protocol: str) -> str:
    """Metrics down, models across, as Table 3."""
    names = list(results)
    header = "| Metric | " + " | ".join(DISPLAY_NAMES.get(n, n) for n in names) + " |"
    lines = [header, "|---|" + "---:|" * len(names)]
    for key, label in METRIC_LABELS.items():
        cells = [f"{results[n][protocol][key]:.4f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    epochs = [str(results[n][protocol]["epoch"]) for n in names]
    lines.append("| epoch | " + " | ".join(epochs) + " |")
    return "\n".join(lines)


def comparison_markdown(results: dict[str, dict[str, Any]], data: str) -> str:
    sections = [f"# Model comparison on {data}", ""]
    for protocol, title in PROTOCOLS.items():
        sections += [f"## {title}", "", markdown_table(results, protocol), ""]
    seconds = [
        f"{DISPLAY_NAMES.get(n, n)} {r['epoch_seconds']:.1f} s"
        for n, r in results.items()
        if r["epoch_seconds"] is not None
    ]
    if seconds:
        sections += ["Mean training seconds per epoch: " + ", ".join(seconds) + ".", ""]
    return "\n".join(sections)


def _parser() -> CommandParser:
    parser = CommandParser(
        prog="cosrec compare", description="train and evaluate models, as Table 3"
    )
    add_data_arguments(parser, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument(
        "--models", type=model_names, default="all", help="all, or e.g. cosrec,caser,fpmc"
    )
    parser.add_argument("--epochs", type=positive_int, default=40, help="the epoch budget")
    parser.add_argument("--eval-every", type=positive_int, default=1, help="epochs per MAP")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training")
    parser.add_argument(
        "--generic-user-rate",
        type=fraction,
        default=0.0,
        help="fraction of instances given the generic user (0, the paper's setting)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def compare_main(argv: list[str]) -> int:
    parser = _parser()

    def body() -> int:
        from model import MODELS
        from training.checkpoint import save_checkpoint
        from training.plots import plot_training_history

        args = parser.parse_args(argv)
        check_device(args.device)
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {args.out}: not a directory")
        splits = load_splits_from_args(args)
        config = train_config_from_args(args)
        command = shlex.join(["cosrec", "compare", *argv])
        machine = machine_description(args.device)
        results: dict[str, dict[str, Any]] = {}
        for name in args.models:  # argparse applied model_names to the default, too
            log_line(f"--- {name}")
            if not getattr(MODELS[name], "trainable", True):
                model, report = count_popularity(splits, name, log_line)
            else:
                model, report = train_and_measure(splits, name, config, args.eval_every, log_line)
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
            save_checkpoint(directory / "checkpoint.pt", model)
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
        data = "generated data" if args.synthetic else str(args.data)
        (args.out / "comparison.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "comparison.md").write_text(comparison_markdown(results, data))
        print(markdown_table(results, "paper_protocol"))
        print(f"wrote {args.out / 'comparison.md'} and {args.out / 'comparison.json'}")
        return 0

    return run_command(parser.prog, body)
