"""The one interface of every network here: a sequential recommender (issue 11).

In the spirit of RecBole's ``SequentialRecommender`` and implicit's ``RecommenderBase``: the
training loop, checkpoints, evaluation and the ONNX export talk to this class, never to a
particular model, and the registry in ``model/__init__.py`` holds only its subclasses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from model.output import ItemOutput


class SequentialRecommender(nn.Module, ABC):
    """Scores items for a user from the user's last L items.

    Every model takes the same inputs: ``items`` [B, L] item indices, oldest first, 0 being
    padding, and ``users`` [B] user indices. A model that ignores the user or the older items
    simply does not read them, so that callers never need to know which model they run.

    A subclass declares its registry ``name`` and its ``hyperparameter_names`` (its
    constructor's keyword arguments, ``L`` first) and hands their values to ``__init__`` here,
    which keeps them as attributes. ``hyperparameters()`` reads them back, so
    ``build_model(m.name, m.num_users, m.num_items, **m.hyperparameters())`` rebuilds ``m``.
    """

    name: ClassVar[str]  # the registry key, saved in checkpoints and bundles
    trainable: ClassVar[bool] = True  # False: fitted without gradients (see PopRec)
    hyperparameter_names: ClassVar[tuple[str, ...]] = ("L",)
    # The state_dict entries with one row per item index, and per user index: a model trained
    # on other vocabularies can hand these over row by row, by id (training.warm_start).
    item_tables: ClassVar[tuple[str, ...]] = (
        "item_embeddings.weight",
        "output.weight.weight",
        "output.bias.weight",
    )
    user_tables: ClassVar[tuple[str, ...]] = ("user_embeddings.weight",)

    num_users: int
    num_items: int
    L: int
    output: ItemOutput  # scores items against sequence_features (PopRec has none)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Fail when the class is written, not when its first checkpoint cannot be named.
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} must declare its own registry `name`")
        if "L" not in cls.hyperparameter_names:
            raise TypeError(f"{cls.__qualname__}.hyperparameter_names must include 'L'")

    def __init__(self, num_users: int, num_items: int, **hyperparameters: Any) -> None:
        super().__init__()
        if set(hyperparameters) != set(self.hyperparameter_names):
            raise TypeError(
                f"{self.name} declares {self.hyperparameter_names}, got {sorted(hyperparameters)}"
            )
        # Checked here once, as nn.Dropout did: the models apply it with F.dropout.
        if not 0.0 <= hyperparameters.get("dropout", 0.0) <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {hyperparameters['dropout']}")
        self.num_users, self.num_items = num_users, num_items
        for key in self.hyperparameter_names:
            setattr(self, key, hyperparameters[key])

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-ready: sequences come out as lists."""
        return {key: _plain(getattr(self, key)) for key in self.hyperparameter_names}

    def forward(
        self, items: torch.Tensor, users: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of ``targets`` [B, K], or of every item index [B, num_items + 1] if None."""
        return self.output(self.sequence_features(items, users), targets)

    @abstractmethod
    def sequence_features(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """items [B, L], users [B] -> [B, D]: the vector every item is scored against."""


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value
