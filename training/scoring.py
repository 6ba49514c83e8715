"""Score functions: how evaluation asks a model (PyTorch, or an exported bundle) for scores.

A score function takes user indices [B] and those users' histories (item indices, oldest
first) and returns float32 scores [B, num_items + 1] (column i scores item index i; column 0
is padding). Every score function turns a history into the network's input with the
contract's `input_rows`, exactly as the service does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from contract.bundle import Bundle
from contract.ids import UNKNOWN_INDEX, Vocabulary, input_rows, score_column

ScoreFn = Callable[[np.ndarray, Sequence[np.ndarray]], torch.Tensor]


def torch_scorer(model: nn.Module, device: str = "cpu", batch_size: int = 1024) -> ScoreFn:
    """The model's scores of every item, in chunks of ``batch_size`` rows.

    Runs in eval mode without gradients and restores the model's train/eval mode afterwards,
    so it is safe to call between training epochs.
    """
    target = torch.device(device)

    def score(users: np.ndarray, histories: Sequence[np.ndarray]) -> torch.Tensor:
        was_training = model.training
        model.eval()
        model.to(target)
        users_t = torch.as_tensor(np.asarray(users, dtype=np.int64))
        items_t = torch.from_numpy(input_rows(histories, model.L))
        chunks = []
        try:
            with torch.no_grad():
                for start in range(0, len(users_t), batch_size):
                    stop = start + batch_size
                    scores = model(items_t[start:stop].to(target), users_t[start:stop].to(target))
                    chunks.append(scores.float().cpu())
        finally:
            model.train(was_training)
        if not chunks:
            return torch.empty((0, model.num_items + 1), dtype=torch.float32)
        return torch.cat(chunks)

    return score


def bundle_scorer(
    bundle: Bundle, users: Vocabulary, items: Vocabulary, batch_size: int = 1024
) -> ScoreFn:
    """A serving bundle's scores in the index space of `users`/`items` (e.g. a split's),
    mapped by external id.

    As in the service: users the bundle does not know are the generic user, history items it
    does not know are skipped (`input_rows`), and items it cannot score get -inf (rank last).
    """
    user_map = bundle.users.translate(users)
    item_map = bundle.items.translate(items)
    scorable = item_map != UNKNOWN_INDEX
    columns = score_column(item_map[scorable])  # the bundle's column of each scorable item

    def score(user_indices: np.ndarray, histories: Sequence[np.ndarray]) -> torch.Tensor:
        inputs = input_rows([item_map[history] for history in histories], bundle.sequence_length)
        out = np.full((len(user_indices), len(item_map)), -np.inf, dtype=np.float32)
        for start in range(0, len(user_indices), batch_size):
            stop = start + batch_size
            scores = bundle.score(inputs[start:stop], user_map[user_indices[start:stop]])
            out[start:stop, scorable] = scores[:, columns]
        return torch.from_numpy(out)

    return score
