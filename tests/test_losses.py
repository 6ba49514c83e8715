"""The losses of training.losses: what each computes, that padding is never a target or a
negative, and that each one trains; the training loop's stop signal and lr decay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import build_model
from training.evaluation import evaluate
from training.fit import TrainConfig, fit, set_seed
from training.losses import LOSSES, bce_loss, sampled_softmax_loss, softmax_loss
from training.new_users import popularity_scorer
from training.scoring import torch_scorer
from training.split import splits_of
from training.synthetic import generate_log

SMALL = {"d": 8, "block_channels": [8, 16], "fc_dim": 8}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return generate_log(num_users=60, num_items=30, length_range=(12, 24), seed=4)


def config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "progress": False, **changes})


def test_softmax_loss_is_cross_entropy_over_the_items_without_padding():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 8, generator=generator)  # 7 items + the padding column
    targets = torch.tensor([[3, 1], [7, 2], [0, 5], [4, 4]])
    mask = (targets != 0).float()
    expected = torch.stack(
        [
            F.cross_entropy(scores[row : row + 1, 1:], targets[row, k : k + 1] - 1)
            for row in range(4)
            for k in range(2)
            if targets[row, k] != 0
        ]
    ).mean()
    torch.testing.assert_close(softmax_loss(scores, targets, mask), expected)
    # The padding column takes no part: however high it scores, the loss stays.
    raised = scores.clone()
    raised[:, 0] = 50.0
    torch.testing.assert_close(softmax_loss(raised, targets, mask), expected)


def test_sampled_softmax_loss_is_cross_entropy_of_each_target_against_the_negatives():
    positive = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    negative = torch.tensor([[0.3, -2.0, 1.0], [1.5, 0.2, -0.4]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    terms = [
        F.cross_entropy(
            torch.cat([positive[row, k : k + 1], negative[row]]).unsqueeze(0),
            torch.tensor([0]),
        )
        for row, k in ((0, 0), (0, 1), (1, 0))
    ]
    torch.testing.assert_close(
        sampled_softmax_loss(positive, negative, mask), torch.stack(terms).mean()
    )


def test_the_paper_loss_is_still_equation_1():
    positive = torch.tensor([[2.0, -1.0, 0.5]])
    negative = torch.tensor([[0.3, -2.0, 1.0]])
    expected = (
        -torch.log(torch.sigmoid(positive)).mean() - torch.log(1 - torch.sigmoid(negative)).mean()
    )
    torch.testing.assert_close(bce_loss(positive, negative, torch.ones(1, 3)), expected)


@pytest.mark.parametrize("loss", LOSSES)
def test_no_loss_ever_trains_the_padding_item(data, loss: str):
    """Without weight decay, only a gradient could move the padding item's output row and
    bias: none comes, because padding is never a target, a negative or in the softmax."""
    set_seed(0)
    model = build_model("cosrec", data.num_users, data.num_items, **SMALL)
    rows_before = model.output.weight.weight.detach().clone()
    bias_before = model.output.bias.weight.detach().clone()
    negatives = {"bce": 3, "sampled-softmax": 20, "softmax": 0}[loss]
    fit(model, data, config(loss=loss, negatives=negatives, weight_decay=0.0))
    rows, bias = model.output.weight.weight.detach(), model.output.bias.weight.detach()
    assert torch.equal(rows[0], rows_before[0])
    assert torch.equal(bias[0], bias_before[0])
    assert not torch.equal(rows[1:], rows_before[1:])


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_learns_the_sequences_beyond_popularity(loss: str):
    """FMC reads only the last item: what it learns beyond popularity is the sequences'."""
    splits = splits_of(generate_log(num_users=150, num_items=100, length_range=(15, 30), seed=2))
    set_seed(0)
    train = splits.test.train
    model = build_model("fmc", train.num_users, train.num_items, d=16)
    negatives = {"bce": 3, "sampled-softmax": 20, "softmax": 0}[loss]
    history = fit(model, train, config(epochs=8, lr=1e-2, loss=loss, negatives=negatives))
    assert history[-1].loss < history[0].loss
    learned = evaluate(torch_scorer(model), splits.test)["map"]
    popularity = evaluate(popularity_scorer(train), splits.test)["map"]
    assert learned > 1.5 * popularity


def test_the_same_seed_gives_the_same_weights_with_sampled_softmax(data):
    def trained():
        set_seed(0)
        model = build_model("fpmc", data.num_users, data.num_items, d=8)
        fit(model, data, config(loss="sampled-softmax", negatives=15, generic_user_rate=0.2))
        return model.state_dict()

    first, again = trained(), trained()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_a_bad_loss_or_decay_is_refused(data):
    model = build_model("fpmc", data.num_users, data.num_items, d=8)
    with pytest.raises(ValueError, match="unknown loss"):
        fit(model, data, config(loss="hinge"))
    with pytest.raises(ValueError, match="lr_decay"):
        fit(model, data, config(lr_decay=0.0))
    with pytest.raises(ValueError, match="negative"):
        fit(model, data, config(loss="sampled-softmax", negatives=0))


def test_on_epoch_end_returning_true_stops_training(data):
    model = build_model("fpmc", data.num_users, data.num_items, d=8)
    history = fit(model, data, config(epochs=5), on_epoch_end=lambda stats: stats.epoch == 2)
    assert [s.epoch for s in history] == [1, 2]


def test_lr_decay_shrinks_the_steps_epoch_by_epoch(data):
    """With a decay of 1e-3 the second epoch's steps are a thousand times smaller: the weights
    barely move after epoch 1, while without decay they keep moving."""

    def weights_after(epochs: int, decay: float) -> np.ndarray:
        set_seed(0)
        model = build_model("fpmc", data.num_users, data.num_items, d=8)
        fit(model, data, config(epochs=epochs, lr=1e-2, lr_decay=decay, weight_decay=0.0))
        return model.output.weight.weight.detach().numpy().copy()

    decayed = np.abs(weights_after(2, 1e-3) - weights_after(1, 1e-3)).max()
    constant = np.abs(weights_after(2, 1.0) - weights_after(1, 1.0)).max()
    assert decayed < constant / 100
    assert math.isfinite(decayed)
