"""Training losses, selected by name (`TrainConfig.loss`, `cosrec train --loss`).

- `bce`: the paper's Eq. (1), binary cross-entropy of the T targets against a few sampled
  negatives (3 by default, as the reference);
- `softmax`: full softmax cross-entropy, each target against every item (cheap at a few
  thousand items: one [B, num_items] matrix product per batch);
- `sampled-softmax`: each target against the instance's K sampled negatives (K in the
  hundreds), for catalogues where the full softmax is too dear.

The models stay as they are: `model(items, users)` scores every item index
[B, num_items + 1], `model(items, users, candidates)` only the candidates. Column 0, the padding
item, is never a target or a negative: padding targets (short, left-padded sequences) are
masked out, negatives come from the sampler (items 1..num_items the user never touched), and
the full softmax drops column 0 before normalising.
"""

from __future__ import annotations

import torch
from torch import nn

from contract.ids import PADDING_INDEX

LOSSES = ("bce", "softmax", "sampled-softmax")
DEFAULT_NEGATIVES = {"bce": 3, "sampled-softmax": 100, "softmax": 0}  # 0: samples none


def check_loss(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} (choose from: {', '.join(LOSSES)})")


def samples_negatives(name: str) -> bool:
    """Whether the loss needs sampled negatives (the full softmax scores every item)."""
    return name != "softmax"


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def bce_loss(positive: torch.Tensor, negative: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. (1): -mean log sigmoid(positive) - mean log(1 - sigmoid(negative)).

    ``mask`` drops padding targets (only short, left-padded sequences have them).
    """
    positive_loss = -(nn.functional.logsigmoid(positive) * mask).sum() / mask.sum().clamp(min=1)
    return positive_loss - nn.functional.logsigmoid(-negative).mean()


def softmax_loss(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real targets of -log softmax(scores over items 1..num_items)[target].

    ``scores`` [B, num_items + 1] (column 0, padding, is left out of the normaliser), ``targets``
    [B, T] item indices, ``mask`` [B, T] 1 for real targets, 0 for padding ones.
    """
    items = scores[:, PADDING_INDEX + 1 :]
    normaliser = torch.logsumexp(items, dim=1, keepdim=True)  # [B, 1]
    # A padding target (masked out) is read at column 0 of `items` just to keep the shape.
    picked = items.gather(1, (targets - 1).clamp(min=0))
    return _masked_mean(normaliser - picked, mask)


def sampled_softmax_loss(
    positive: torch.Tensor, negative: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Each target against the instance's sampled negatives: mean over real targets of
    -log(exp(p) / (exp(p) + sum exp(negatives))).

    The negatives are drawn uniformly (from items the user never touched), so the logQ
    correction of sampled softmax is a constant and drops out.
    """
    negatives = torch.logsumexp(negative, dim=1, keepdim=True)  # [B, 1]
    return _masked_mean(torch.logaddexp(positive, negatives) - positive, mask)


def batch_loss(
    model: nn.Module,
    loss: str,
    items: torch.Tensor,
    users: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor | None,
    bf16: bool = False,
) -> torch.Tensor:
    """The loss `loss` of a batch: scores computed by `model` (in bf16 autocast if asked),
    the loss in float32."""
    mask = (targets != PADDING_INDEX).float()
    if loss == "softmax":
        with torch.autocast(items.device.type, dtype=torch.bfloat16, enabled=bf16):
            scores = model(items, users)
        return softmax_loss(scores.float(), targets, mask)
    if negatives is None:
        raise ValueError(f"the {loss} loss needs sampled negatives")
    candidates = torch.cat([targets, negatives], dim=1)
    with torch.autocast(items.device.type, dtype=torch.bfloat16, enabled=bf16):
        scores = model(items, users, candidates)
    positive, negative = scores.float().split([targets.shape[1], negatives.shape[1]], dim=1)
    if loss == "bce":
        return bce_loss(positive, negative, mask)
    if loss == "sampled-softmax":
        return sampled_softmax_loss(positive, negative, mask)
    check_loss(loss)
    raise AssertionError(loss)  # pragma: no cover: check_loss raised


__all__ = [
    "DEFAULT_NEGATIVES",
    "LOSSES",
    "batch_loss",
    "bce_loss",
    "check_loss",
    "sampled_softmax_loss",
    "samples_negatives",
    "softmax_loss",
]
