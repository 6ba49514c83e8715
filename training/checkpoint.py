"""Checkpoints: a plain dict of names, numbers and a state_dict, loaded with weights_only=True."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import MODELS, build_model

_KEYS = {"model", "hyperparameters", "num_users", "num_items", "state_dict"}


def save_checkpoint(path: str | Path, model: nn.Module) -> None:
    torch.save(
        {
            "model": model.name,
            "hyperparameters": model.hyperparameters(),
            "num_users": model.num_users,
            "num_items": model.num_items,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        path,
    )


def load_checkpoint(path: str | Path) -> nn.Module:
    """The model saved at ``path``, on CPU, in eval mode. Executes no code from the file."""
    try:
        content: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"{path}: not a cosrec checkpoint ({_first_line(error)})") from error
    if not isinstance(content, dict) or set(content) != _KEYS:
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
    return model.eval()


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
