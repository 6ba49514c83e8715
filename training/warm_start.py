"""Warm start: a new model begins from a trained one over other vocabularies.

Layers that do not depend on the vocabularies (convolutions, the fully connected layer, batch
norm statistics) are copied whole; per-item and per-user rows (`SequentialRecommender`'s
`item_tables` and `user_tables`) are copied by id, so an item keeps its embedding when its
index moves; rows of ids the old model never saw keep their fresh initialisation, as in
training from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contract.ids import Vocabulary
from model import SequentialRecommender


@dataclass(frozen=True)
class WarmStart:
    tensors_copied: int
    items_kept: int  # ids of the new item vocabulary the old model knew
    users_kept: int


def warm_start(
    model: SequentialRecommender,
    parent: SequentialRecommender,
    vocabularies: tuple[Vocabulary, Vocabulary],
    parent_vocabularies: tuple[Vocabulary, Vocabulary],
) -> WarmStart:
    """Copy `parent`'s weights into `model` (same family and hyper-parameters). Vocabularies
    are (users, items), as each model was trained on them."""
    if (model.name, model.hyperparameters()) != (parent.name, parent.hyperparameters()):
        raise ValueError(
            f"cannot warm-start a {model.name} {model.hyperparameters()} from a "
            f"{parent.name} {parent.hyperparameters()}"
        )
    users, items = vocabularies
    parent_users, parent_items = parent_vocabularies
    item_rows = _row_map(parent_items.translate(items))
    user_rows = _row_map(parent_users.translate(users))
    own = model.state_dict()
    copied = 0
    with torch.no_grad():
        for name, tensor in parent.state_dict().items():
            if name in model.item_tables:
                rows = item_rows
            elif name in model.user_tables:
                rows = user_rows
            else:
                own[name].copy_(tensor)
                copied += 1
                continue
            new_rows, old_rows = rows
            own[name][new_rows] = tensor[old_rows]
            copied += 1
    return WarmStart(copied, int((item_rows[0] > 0).sum()), int((user_rows[0] > 0).sum()))


def _row_map(old_index_of_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(new rows, old rows) for every new index the old vocabulary knows; row 0 (padding, or
    the generic user) maps to row 0."""
    old = torch.as_tensor(old_index_of_new)
    known = old > 0
    known[0] = True
    new_rows = torch.nonzero(known).squeeze(1)
    return new_rows, old[new_rows]
