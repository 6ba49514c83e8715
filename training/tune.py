"""Hyper-parameter search on the validation split only, then one retrain on the 80% split
(`cosrec tune`, `cosrec train --model auto`).

1. `search`: Optuna (TPE sampler, seeded) draws settings from `training.search_space`; each
   trial trains on the validation split's 70% and measures MAP on its next 10% after every
   epoch. A trial keeps its best epoch (the epoch count is chosen by validation MAP, as in
   `training.pipeline`) and stops after `patience` epochs without a better MAP, or when the
   median pruner finds it below the median of earlier trials at the same epoch. The first
   trial is the family's reference settings. The search ends after `trials` trials or when
   `seconds` of wall time (training and validation together) are spent; a trial running when
   the time is up stops after its current epoch and counts with what it reached.
2. `retrain`: the best trial's settings are trained once on the 80% split for as many epochs
   as that trial ran, measuring test after every epoch, exactly as `training.pipeline`'s second
   run: `validation_selected` is test at the trial's best validation epoch, `paper_protocol`
   the best test epoch. Test is read by nothing else.

Every family gets the same `Budget`, and `choose_family` picks the family with the best
validation MAP: what `cosrec train --model auto` exports.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from training.dataset import Split
from training.evaluation import count_and_evaluate
from training.fit import TrainConfig
from training.pipeline import (
    EpochRecord,
    Log,
    PipelineResult,
    best_epoch,
    retrain_on_test,
    training_run,
)
from training.search_space import describe, is_trained, reference_params, settings_of, suggest
from training.split import Splits


@dataclass(frozen=True)
class Budget:
    """What every family's search may spend."""

    trials: int = 10
    seconds: float = 600.0  # wall time of the whole search: training and validation
    max_epochs: int = 30  # per trial
    patience: int = 3  # epochs without a better validation MAP before a trial stops
    startup_trials: int = 3  # random trials before TPE models, and before pruning starts
    warmup_epochs: int = 2  # no trial is pruned before this many epochs

    def __post_init__(self) -> None:
        if self.trials < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("trials, max_epochs and patience must be at least 1")
        if not self.seconds > 0:
            raise ValueError("the time budget must be positive")


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    state: str  # complete, early-stopped, pruned, time budget, failed
    validation_map: float | None  # the best measured epoch's
    best_epoch: int | None
    epochs_run: int
    seconds: float


@dataclass
class SearchResult:
    model_name: str
    hyperparameters: dict[str, Any]  # the best trial's network settings
    config: TrainConfig  # its training settings; `epochs`: how many the retrain runs
    params: dict[str, Any]  # the best trial's parameters, named as in the search space
    validation_map: float
    selected_epoch: int
    validation_run: list[EpochRecord]  # the best trial's epochs
    budget: Budget
    seconds: float  # the search's wall time
    time_budget_reached: bool
    trials: list[TrialRecord] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: what was searched, what it cost, what won."""
        states = [trial.state for trial in self.trials]
        return {
            "validation_map": self.validation_map,
            "selected_epoch": self.selected_epoch,
            "params": self.params,
            "budget": asdict(self.budget),
            "seconds": self.seconds,
            "time_budget_reached": self.time_budget_reached,
            "trials_run": len(self.trials),
            "trials_pruned": states.count("pruned"),
            "search_space": describe(self.model_name),
            "trials": [asdict(trial) for trial in self.trials],
        }


def search(
    split: Split,
    model_name: str,
    budget: Budget,
    base: TrainConfig | None = None,
    log: Log | None = None,
) -> SearchResult:
    """The search of the module docstring on `split` (the validation split).

    `base` gives what is not searched (seed, device, batch size, bf16, generic-user rate).
    """
    base = base or TrainConfig(progress=False)
    log = log or (lambda _: None)
    if not is_trained(model_name):
        return _count(split, model_name, budget, base, log)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=budget.startup_trials),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=budget.startup_trials, n_warmup_steps=budget.warmup_epochs
        ),
    )
    study.enqueue_trial(reference_params(model_name))
    started = time.perf_counter()
    runs: dict[int, list[EpochRecord]] = {}
    trials: list[TrialRecord] = []

    def time_up() -> bool:
        return time.perf_counter() - started >= budget.seconds

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, model_name)
        settings = settings_of(model_name, params)
        config = replace(base, epochs=budget.max_epochs, **settings.training)
        trial_started = time.perf_counter()
        best = {"map": -1.0, "epoch": 0}
        state = ["complete"]

        def stop(record: EpochRecord) -> bool:
            if record.metrics is not None:
                value = record.metrics["map"]
                if value > best["map"]:
                    best.update(map=value, epoch=record.epoch)
                trial.report(value, record.epoch)
                if trial.should_prune():
                    state[0] = "pruned"
                    return True
                if record.epoch - best["epoch"] >= budget.patience:
                    state[0] = "early-stopped"
                    return True
            if time_up() and record.epoch < config.epochs:
                state[0] = "time budget"
                return True
            return False

        log(f"{model_name} trial {trial.number}: {params}")
        try:
            _, run, _ = training_run(
                split, model_name, settings.hyperparameters, config, 1, None,
                f"{model_name} trial {trial.number}", log, stop,
            )  # fmt: skip
        except ValueError as error:  # settings the data cannot take
            trials.append(
                TrialRecord(trial.number, params, f"failed: {error}", None, None, 0,
                            time.perf_counter() - trial_started)
            )  # fmt: skip
            raise
        runs[trial.number] = run
        trials.append(
            TrialRecord(
                trial.number, params, state[0], best["map"], best["epoch"], len(run),
                time.perf_counter() - trial_started,
            )
        )  # fmt: skip
        log(
            f"{model_name} trial {trial.number}: {state[0]}, validation MAP {best['map']:.4f}"
            f" at epoch {best['epoch']} ({time.perf_counter() - started:.0f} s spent)"
        )
        if time_up():
            trial.study.stop()
        if state[0] == "pruned":
            raise optuna.TrialPruned()
        return best["map"]

    study.optimize(objective, n_trials=budget.trials, timeout=budget.seconds, catch=(ValueError,))
    seconds = time.perf_counter() - started
    finished = [t for t in trials if t.state != "pruned" and t.validation_map is not None]
    if not finished:
        raise ValueError(f"{model_name}: no trial finished within the budget")
    winner = max(finished, key=lambda t: (t.validation_map, -t.number))
    settings = settings_of(model_name, winner.params)
    run = runs[winner.number]
    return SearchResult(
        model_name=model_name,
        hyperparameters=settings.hyperparameters,
        config=replace(base, epochs=len(run), **settings.training),
        params=winner.params,
        validation_map=float(winner.validation_map),
        selected_epoch=best_epoch(run),
        validation_run=run,
        budget=budget,
        seconds=seconds,
        time_budget_reached=seconds >= budget.seconds,
        trials=sorted(trials, key=lambda t: t.number),
    )


def _count(split: Split, model_name: str, budget: Budget, base: TrainConfig, log: Log):
    """A family without settings (PopRec): one count of the validation split's training part."""
    _, metrics, seconds = count_and_evaluate(split, model_name)
    log(f"{model_name}: validation MAP {metrics['map']:.4f} (counted, nothing to search)")
    record = EpochRecord(0, 0.0, 0.0, metrics, seconds)
    return SearchResult(
        model_name=model_name,
        hyperparameters={},
        config=replace(base, epochs=0),
        params={},
        validation_map=metrics["map"],
        selected_epoch=0,
        validation_run=[record],
        budget=budget,
        seconds=seconds,
        time_budget_reached=False,
        trials=[TrialRecord(0, {}, "complete", metrics["map"], 0, 0, seconds)],
    )


def retrain(splits: Splits, result: SearchResult, log: Log | None = None) -> PipelineResult:
    """The chosen settings trained once on the 80% split and measured on test (module
    docstring, step 2)."""
    log = log or (lambda _: None)
    if is_trained(result.model_name):
        return retrain_on_test(
            splits, result.model_name, result.hyperparameters, result.config,
            result.validation_run, 1, log,
        )  # fmt: skip
    model, metrics, seconds = count_and_evaluate(splits.test, result.model_name)
    record = EpochRecord(0, 0.0, 0.0, metrics, seconds)
    log(f"{result.model_name}: test MAP {metrics['map']:.4f}")
    return PipelineResult(model, splits.test.train, 0, 0, list(result.validation_run), [record])


def tune_model(
    splits: Splits,
    model_name: str,
    budget: Budget,
    base: TrainConfig | None = None,
    log: Log | None = None,
) -> tuple[SearchResult, PipelineResult]:
    """`search` on the validation split, then `retrain` on the test split."""
    result = search(splits.validation, model_name, budget, base, log)
    return result, retrain(splits, result, log)


def choose_family(validation_maps: Mapping[str, float]) -> str:
    """The family whose search reached the best validation MAP (`SearchResult.validation_map`);
    the first given on ties. Test figures play no part."""
    if not validation_maps:
        raise ValueError("no family was searched")
    names = list(validation_maps)
    return max(names, key=lambda name: (validation_maps[name], -names.index(name)))


def report(search_result: SearchResult, result: PipelineResult) -> dict[str, Any]:
    """One model's entry, shaped like bench/results/ml1m.json's (without machine and command)."""
    trained = is_trained(search_result.model_name)
    timings = result.timings()
    return {
        "model": search_result.model_name,
        "hyperparameters": result.model.hyperparameters(),
        "config": asdict(search_result.config),
        **result.figures(),
        "epoch_seconds": timings["epoch_seconds"] if trained else None,
        "eval_seconds": timings["eval_seconds"],
        "selected_epoch": result.selected_epoch,
        "paper_epoch": result.paper_epoch,
        "search": search_result.summary(),
        "history": result.history(),
    }
