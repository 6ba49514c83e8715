"""Checkpoints: a plain dict of names, numbers and a state_dict, loaded with weights_only=True.

A checkpoint written by training also carries its data's `DataSummary` (vocabularies,
popularity, fingerprint), so `cosrec export` turns it into a bundle without the data.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from model import MODELS, SequentialRecommender, build_model
from training.export import DataSummary

_KEYS = {"model", "hyperparameters", "num_users", "num_items", "state_dict"}
_DATA_KEY = "data"


@dataclass(frozen=True)
class Checkpoint:
    model: SequentialRecommender  # on CPU, in eval mode
    data: DataSummary | None  # None: saved without it (export then needs the data)


def save_checkpoint(
    path: str | Path, model: SequentialRecommender, data: DataSummary | None = None
) -> None:
    content: dict[str, Any] = {
        "model": model.name,
        "hyperparameters": model.hyperparameters(),
        "num_users": model.num_users,
        "num_items": model.num_items,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if data is not None:
        content[_DATA_KEY] = data.to_dict()
    torch.save(content, path)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``; ValueError says what is wrong. Executes no code from it."""
    try:
        content: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"{path}: not a cosrec checkpoint ({_first_line(error)})") from error
    if not isinstance(content, dict) or set(content) - {_DATA_KEY} != _KEYS:
        raise ValueError(f"{path}: not a cosrec checkpoint (expected a dict with {sorted(_KEYS)})")
    if content["model"] not in MODELS:
        raise ValueError(f"{path}: unknown model {content['model']!r}")
    if not isinstance(content["hyperparameters"], dict) or not isinstance(
        content["state_dict"], dict
    ):
        raise ValueError(f"{path}: hyperparameters and state_dict must be dicts")
    try:
        model = build_model(
            content["model"],
            int(content["num_users"]),
            int(content["num_items"]),
            **content["hyperparameters"],
        )
        model.load_state_dict(content["state_dict"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"{path}: checkpoint does not match its model ({_first_line(error)})"
        ) from error
    return Checkpoint(model.eval(), _data_summary(path, content.get(_DATA_KEY), model))


def load_checkpoint(path: str | Path) -> SequentialRecommender:
    """The model saved at ``path``, on CPU, in eval mode."""
    return read_checkpoint(path).model


def _data_summary(
    path: str | Path, content: object, model: SequentialRecommender
) -> DataSummary | None:
    if content is None:
        return None
    try:
        data = DataSummary.from_dict(content)  # type: ignore[arg-type]
    except (TypeError, KeyError, ValidationError) as error:
        raise ValueError(f"{path}: malformed data summary ({_first_line(error)})") from error
    if (len(data.users), len(data.items)) != (model.num_users, model.num_items):
        raise ValueError(
            f"{path}: the model has {model.num_users} users and {model.num_items} items, its "
            f"data summary {len(data.users)} and {len(data.items)}"
        )
    return data


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
