"""The paper's Table 3 on any data: every model through the same harness (`cosrec compare`).

Each trainable model goes through `training.pipeline.run_pipeline` (the shared loop, the
paper's protocol and the validation-selected epoch); PopRec (`trainable = False`) only counts
the test split's training part. `measure_model` returns a report per model; the markdown
helpers shape reports like Table 3 (metrics down, models across).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy imports wait until a comparison runs
    from model import SequentialRecommender
    from training.fit import TrainConfig
    from training.pipeline import Log
    from training.split import Splits

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


def paper_ordered_models() -> list[str]:
    """Every registered model, in Table 3's order; models not in the paper follow."""
    from model import MODELS

    return [name for name in PAPER_ORDER if name in MODELS] + [
        name for name in MODELS if name not in PAPER_ORDER
    ]


def measure_model(
    splits: Splits, name: str, config: TrainConfig, eval_every: int, log: Log
) -> tuple[SequentialRecommender, dict[str, Any]]:
    """The model trained (or counted) and measured with both protocols, and its report."""
    from model import MODELS

    if not MODELS[name].trainable:
        return count_popularity(splits, name, log)
    return train_and_measure(splits, name, config, eval_every, log)


def count_popularity(
    splits: Splits, name: str, log: Log
) -> tuple[SequentialRecommender, dict[str, Any]]:
    """A model that counts (PopRec) on the test split: no epochs, so both protocols give the
    same figures."""
    from training.evaluation import count_and_evaluate
    from training.pipeline import metric_subset

    model, metrics, eval_seconds = count_and_evaluate(splits.test, name)
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
) -> tuple[SequentialRecommender, dict[str, Any]]:
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
