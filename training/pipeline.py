"""Train, select the number of epochs honestly, and measure: what `cosrec train` runs.

Two runs of the same seeded training:
1. on the validation split (70% of each user's actions), measuring validation MAP every k
   epochs; the best of those epochs is the `selected_epoch`;
2. on the test split (80%), for the full epoch budget, measuring the test split every k epochs.
   `validation_selected` is the test figures at `selected_epoch` (the honest number: the epoch
   was chosen without looking at test); `paper_protocol` is the best test MAP over the
   measured epochs (the paper's protocol: it picks the epoch on test). The model kept for
   export is run 2's at `selected_epoch`.

Taking run 2's state at `selected_epoch` equals retraining for that many epochs: training with
a seed draws the same numbers for epoch e whatever the epoch budget, and evaluating draws none.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model import SequentialRecommender, build_model
from training.dataset import Sequences, Split
from training.evaluation import evaluate
from training.fit import EpochStats, TrainConfig, fit, set_seed
from training.scoring import torch_scorer
from training.split import Splits

METRIC_KEYS = ("map", "prec@1", "prec@5", "prec@10", "recall@1", "recall@5", "recall@10")
Log = Callable[[str], None]


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    seconds: float
    metrics: dict[str, float] | None = None  # only on measured epochs
    eval_seconds: float | None = None


@dataclass
class PipelineResult:
    model: SequentialRecommender  # trained on the test split's train part, `selected_epoch` epochs
    train_data: Sequences  # what `model` was trained on (its vocabularies and popularity)
    selected_epoch: int
    paper_epoch: int
    validation_run: list[EpochRecord] = field(default_factory=list)
    test_run: list[EpochRecord] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """The two test figures, each with the epoch it was taken at."""
        at = {record.epoch: record.metrics for record in self.test_run if record.metrics}
        return {
            "paper_protocol": {**metric_subset(at[self.paper_epoch]), "epoch": self.paper_epoch},
            "validation_selected": {
                **metric_subset(at[self.selected_epoch]),
                "epoch": self.selected_epoch,
            },
        }

    def timings(self) -> dict[str, float]:
        """Mean seconds per training epoch and per evaluation of the test split (run 2)."""
        evaluations = [r.eval_seconds for r in self.test_run if r.eval_seconds is not None]
        return {
            "epoch_seconds": sum(r.seconds for r in self.test_run) / len(self.test_run),
            "eval_seconds": sum(evaluations) / len(evaluations),
        }

    def history(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "validation_run": [asdict(r) for r in self.validation_run],
            "test_run": [asdict(r) for r in self.test_run],
        }


def metric_subset(metrics: dict[str, float]) -> dict[str, float]:
    """The Table 3 figures (`METRIC_KEYS`) of an evaluation's result."""
    return {key: metrics[key] for key in METRIC_KEYS if key in metrics}


def measured_epochs(epochs: int, eval_every: int) -> set[int]:
    """Every `eval_every`-th epoch, and always the last."""
    return {e for e in range(1, epochs + 1) if e % eval_every == 0} | {epochs}


def training_run(
    split: Split,
    model_name: str,
    hyperparameters: dict[str, Any],
    config: TrainConfig,
    eval_every: int,
    keep_epoch: int | None,
    label: str,
    log: Log,
    stop: Callable[[EpochRecord], bool] | None = None,
) -> tuple[SequentialRecommender, list[EpochRecord], dict[str, Any] | None]:
    """Train on `split.train` for `config.epochs`, measuring `split` on the measured epochs.

    Returns the model, the records, and the state_dict at `keep_epoch` (if given). `stop`,
    given an epoch's record, may end the run after that epoch (`training.tune`: early
    stopping, pruning, the time budget).
    """
    set_seed(config.seed)  # the model's initial weights are part of the seeded run
    model = build_model(
        model_name, split.train.num_users, split.train.num_items, L=config.L, **hyperparameters
    )
    scorer = torch_scorer(model, config.device)
    measured = measured_epochs(config.epochs, eval_every)
    records: list[EpochRecord] = []
    kept: dict[str, Any] = {}

    def on_epoch_end(stats: EpochStats) -> bool:
        record = EpochRecord(stats.epoch, stats.loss, stats.seconds)
        if stats.epoch in measured:
            started = time.perf_counter()
            record.metrics = evaluate(scorer, split)
            record.eval_seconds = time.perf_counter() - started
        if stats.epoch == keep_epoch:
            kept["state"] = copy.deepcopy(model.state_dict())
        records.append(record)
        measured_text = f", MAP {record.metrics['map']:.4f}" if record.metrics else ""
        log(
            f"{label} epoch {stats.epoch}/{config.epochs}: loss {stats.loss:.4f}"
            f" ({stats.seconds:.1f} s, {stats.instances_per_second:.0f} inst/s){measured_text}"
        )
        return stop is not None and stop(record)

    fit(model, split.train, config, on_epoch_end)
    return model, records, kept.get("state")


def best_epoch(records: list[EpochRecord]) -> int:
    """The measured epoch with the highest MAP; the earliest one on ties."""
    measured = [r for r in records if r.metrics is not None]
    return max(measured, key=lambda r: (r.metrics["map"], -r.epoch)).epoch


def run_pipeline(
    splits: Splits,
    model_name: str = "cosrec",
    hyperparameters: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    eval_every: int = 1,
    log: Log | None = None,
) -> PipelineResult:
    """Both runs of the module docstring; `config.epochs` is the epoch budget."""
    config = config or TrainConfig()
    hyperparameters = hyperparameters or {}
    log = log or (lambda _: None)
    if eval_every < 1:
        raise ValueError("eval_every must be at least 1")

    _, validation_run, _ = training_run(
        splits.validation, model_name, hyperparameters, config, eval_every, None, "validation", log
    )
    return retrain_on_test(
        splits, model_name, hyperparameters, config, validation_run, eval_every, log
    )


def retrain_on_test(
    splits: Splits,
    model_name: str,
    hyperparameters: dict[str, Any],
    config: TrainConfig,
    validation_run: list[EpochRecord],
    eval_every: int = 1,
    log: Log | None = None,
) -> PipelineResult:
    """Run 2 of the module docstring, after a validation run (the pipeline's, or the best
    trial of `training.tune`): the epoch is selected on `validation_run`, and the test run
    trains for `config.epochs`, which must reach it."""
    log = log or (lambda _: None)
    selected = best_epoch(validation_run)
    if selected > config.epochs:
        raise ValueError(f"the selected epoch {selected} lies beyond the budget {config.epochs}")
    log(f"selected {selected} epochs by validation MAP")
    model, test_run, selected_state = training_run(
        splits.test, model_name, hyperparameters, config, eval_every, selected, "test", log
    )
    model.load_state_dict(selected_state)
    return PipelineResult(
        model=model.cpu().eval(),
        train_data=splits.test.train,
        selected_epoch=selected,
        paper_epoch=best_epoch(test_run),
        validation_run=validation_run,
        test_run=test_run,
    )


def plot_history(result: PipelineResult, path: str | Path) -> None:
    """A PNG of training loss (both runs) and MAP (validation, and test) per epoch."""
    from training.plots import plot_training_history

    history = result.history()
    plot_training_history(
        history["validation_run"], history["test_run"], result.selected_epoch, path
    )
