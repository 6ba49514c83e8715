"""The hyper-parameter search space of every model family, in one place (`cosrec tune`,
`cosrec train --model auto`, bench/accuracy.py).

A trial's parameters are named as below; `settings_of` turns them into the network's
hyper-parameters and the training loop's settings. The first trial of every search is the
family's reference settings (`reference_params`: the paper's defaults for CosRec, the same
loop's defaults for the baselines), so a search never does worse on validation than those.

What is searched, and why these ranges:
- every trainable family: the loss (`training.losses`) and its negatives, lr and a per-epoch
  lr decay (the schedule), weight decay, L (items read) and T (targets per instance);
- the network's own sizes where it has them: d, CosRec's channels and fc_dim, CosRec-base's
  hidden size, Caser's filter counts, dropout;
- the epoch count is not drawn: each trial measures validation MAP every epoch and keeps its
  best epoch (as `training.pipeline` does), stopped early by patience or pruning;
- fixed: batch 512, Adam, the seed. PopRec has nothing to search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.losses import DEFAULT_NEGATIVES, LOSSES


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def describe(self) -> dict[str, Any]:
        return {"choice": list(self.values)}


@dataclass(frozen=True)
class LogRange:
    low: float
    high: float

    def describe(self) -> dict[str, Any]:
        return {"log_uniform": [self.low, self.high]}


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def describe(self) -> dict[str, Any]:
        return {"uniform": [self.low, self.high]}


Distribution = Choice | LogRange | Range

# The training loop's settings, the same for every trainable family.
TRAINING_SPACE: dict[str, Distribution] = {
    "loss": Choice(LOSSES),
    "bce_negatives": Choice((1, 3, 10)),  # only when loss == "bce"
    "sampled_negatives": Choice((50, 100, 300)),  # only when loss == "sampled-softmax"
    "lr": LogRange(3e-4, 1e-2),
    "lr_decay": Choice((1.0, 0.95, 0.9)),
    "weight_decay": LogRange(1e-8, 1e-4),
    "L": Choice((3, 5, 8)),
    "T": Choice((1, 2, 3)),
}
_D = Choice((32, 50, 64, 100))
_DROPOUT = Range(0.0, 0.6)

# The network's settings, per family (the model's constructor arguments, L aside).
MODEL_SPACES: dict[str, dict[str, Distribution]] = {
    "cosrec": {
        "d": _D,
        "block_channels": Choice(("32,64", "64,128", "128,256")),
        "fc_dim": Choice((50, 100, 150, 200)),
        "dropout": _DROPOUT,
    },
    "cosrec-base": {"d": _D, "hidden_dim": Choice((50, 100, 200)), "dropout": _DROPOUT},
    "caser": {
        "d": _D,
        "vertical_filters": Choice((2, 4, 8)),
        "horizontal_filters": Choice((8, 16, 32)),
        "dropout": _DROPOUT,
    },
    "gru4rec": {"d": _D, "dropout": _DROPOUT},
    "fpmc": {"d": _D},
    "fmc": {"d": _D},
    "bpr": {"d": _D},
    "poprec": {},
}

# The first trial of each search: the loop's defaults (TrainConfig) and the model's own.
_REFERENCE_TRAINING = {
    "loss": "bce",
    "bce_negatives": DEFAULT_NEGATIVES["bce"],
    "lr": 1e-3,
    "lr_decay": 1.0,
    "weight_decay": 5e-6,
    "L": 5,
    "T": 3,
}
_REFERENCE_MODELS: dict[str, dict[str, Any]] = {
    "cosrec": {"d": 50, "block_channels": "128,256", "fc_dim": 150, "dropout": 0.5},
    "cosrec-base": {"d": 50, "hidden_dim": 100, "dropout": 0.5},
    "caser": {"d": 50, "vertical_filters": 4, "horizontal_filters": 16, "dropout": 0.5},
    "gru4rec": {"d": 50, "dropout": 0.5},
    "fpmc": {"d": 50},
    "fmc": {"d": 50},
    "bpr": {"d": 50},
    "poprec": {},
}
_TRAINING_NAMES = ("lr", "lr_decay", "weight_decay", "L", "T", "loss")


def searchable(model_name: str) -> bool:
    """Whether the family has a search space (every registered model does)."""
    return model_name in MODEL_SPACES


def _space(model_name: str) -> dict[str, Distribution]:
    if not searchable(model_name):
        raise ValueError(f"no search space for model {model_name!r}")
    return MODEL_SPACES[model_name]


def is_trained(model_name: str) -> bool:
    """PopRec counts; every other family is trained, and searches the training settings."""
    from model import MODELS

    return MODELS[model_name].trainable


def reference_params(model_name: str) -> dict[str, Any]:
    """The parameters of the first trial: the reference settings, named as a trial's."""
    _space(model_name)
    if not is_trained(model_name):
        return {}
    return {**_REFERENCE_TRAINING, **_REFERENCE_MODELS[model_name]}


def _suggest(trial: Any, name: str, distribution: Distribution) -> Any:
    if isinstance(distribution, Choice):
        return trial.suggest_categorical(name, list(distribution.values))
    if isinstance(distribution, LogRange):
        return trial.suggest_float(name, distribution.low, distribution.high, log=True)
    return trial.suggest_float(name, distribution.low, distribution.high)


def suggest(trial: Any, model_name: str) -> dict[str, Any]:
    """A trial's parameters (an `optuna.Trial`'s suggestions); the negatives only for the
    loss that uses them."""
    space = _space(model_name)
    if not is_trained(model_name):
        return {}
    params = {name: _suggest(trial, name, TRAINING_SPACE[name]) for name in _TRAINING_NAMES}
    if params["loss"] == "bce":
        params["bce_negatives"] = _suggest(trial, "bce_negatives", TRAINING_SPACE["bce_negatives"])
    elif params["loss"] == "sampled-softmax":
        name = "sampled_negatives"
        params[name] = _suggest(trial, name, TRAINING_SPACE[name])
    for name, distribution in space.items():
        params[name] = _suggest(trial, name, distribution)
    return params


@dataclass(frozen=True)
class Settings:
    """A trial's parameters as the model's hyper-parameters and TrainConfig fields."""

    hyperparameters: dict[str, Any]
    training: dict[str, Any]


def settings_of(model_name: str, params: dict[str, Any]) -> Settings:
    space = _space(model_name)
    if not is_trained(model_name):
        return Settings({}, {})
    training = {name: params[name] for name in _TRAINING_NAMES}
    loss = params["loss"]
    if loss == "bce":
        training["negatives"] = int(params["bce_negatives"])
    elif loss == "sampled-softmax":
        training["negatives"] = int(params["sampled_negatives"])
    else:
        training["negatives"] = DEFAULT_NEGATIVES[loss]
    hyperparameters: dict[str, Any] = {}
    for name in space:
        value = params[name]
        if name == "block_channels":
            value = [int(part) for part in str(value).split(",")]
        hyperparameters[name] = value
    return Settings(hyperparameters, training)


def describe(model_name: str) -> dict[str, Any]:
    """The family's search space as JSON, for the results."""
    space = _space(model_name)
    if not is_trained(model_name):
        return {}
    training = {name: TRAINING_SPACE[name].describe() for name in TRAINING_SPACE}
    return {
        "training": training,
        "model": {name: distribution.describe() for name, distribution in space.items()},
        "reference_first_trial": reference_params(model_name),
    }
