"""The training loop, the scorer and checkpoints, on small generated data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model import build_model
from training.checkpoint import load_checkpoint, save_checkpoint
from training.fit import (
    EpochStats,
    TrainConfig,
    bce_loss,
    fit,
    set_seed,
    training_path,
    uses_cuda_graphs,
)
from training.planted import planted_skip_sequences
from training.scoring import torch_scorer

SMALL = {"d": 8, "block_channels": [8, 16], "fc_dim": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def data():
    return planted_skip_sequences(num_users=40, num_items=25, length=16, seed=5)


def small_model(data, seed: int = 0, name: str = "cosrec"):
    set_seed(seed)
    hyperparameters = SMALL if name == "cosrec" else {"d": 8, "hidden_dim": 8}
    return build_model(name, data.num_users, data.num_items, **hyperparameters)


def config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "progress": False, **changes})


def test_fit_reports_every_epoch_and_the_loss_falls(data):
    seen: list[EpochStats] = []
    history = fit(small_model(data), data, config(epochs=6, lr=1e-2), on_epoch_end=seen.append)
    assert seen == history
    assert [s.epoch for s in history] == [1, 2, 3, 4, 5, 6]
    assert all(s.seconds > 0 and s.instances_per_second > 0 for s in history)
    assert history[-1].loss < 0.8 * history[0].loss


@pytest.mark.parametrize("name", ["cosrec", "cosrec-base"])
def test_same_seed_same_weights_other_seed_other_weights(data, name: str):
    def trained(seed: int):
        model = small_model(data, seed=seed, name=name)
        fit(model, data, config(seed=seed, generic_user_rate=0.3))
        return model.state_dict()

    first, again, other = trained(1), trained(1), trained(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_generic_user_rate_one_trains_only_the_generic_user(data):
    model = small_model(data)
    users_before = model.user_embeddings.weight.detach().clone()
    fit(model, data, config(generic_user_rate=1.0, weight_decay=0.0))
    users_after = model.user_embeddings.weight.detach()
    assert not torch.equal(users_after[0], users_before[0])
    assert torch.equal(users_after[1:], users_before[1:])


def test_bf16_autocast_trains(data):
    history = fit(small_model(data), data, config(epochs=1, bf16=True))
    assert math.isfinite(history[0].loss)


def test_refuses_a_model_sized_for_other_data(data):
    model = build_model("cosrec", data.num_users, data.num_items + 1, **SMALL)
    with pytest.raises(ValueError, match="sized for"):
        fit(model, data, config())


def test_loss_is_equation_1_and_ignores_padding_targets():
    positive = torch.tensor([[2.0, -1.0, 0.5]])
    negative = torch.tensor([[0.3, -2.0, 1.0]])
    expected = (
        -torch.log(torch.sigmoid(positive)).mean() - torch.log(1 - torch.sigmoid(negative)).mean()
    )
    torch.testing.assert_close(bce_loss(positive, negative, torch.ones(1, 3)), expected)
    masked = bce_loss(positive, negative, torch.tensor([[0.0, 1.0, 1.0]]))
    expected = (
        -torch.log(torch.sigmoid(positive[:, 1:])).mean()
        - torch.log(1 - torch.sigmoid(negative)).mean()
    )
    torch.testing.assert_close(masked, expected)


def test_scorer_scores_all_items_in_eval_mode_and_restores_the_mode(data):
    model = small_model(data).train()
    users = np.arange(1, 11)
    # histories of 5 known items each: the scorer's input rows are the histories themselves
    items = np.random.default_rng(0).integers(1, data.num_items + 1, size=(10, 5))
    scores = torch_scorer(model, batch_size=3)(users, list(items))
    assert model.training
    assert scores.shape == (10, data.num_items + 1)
    assert scores.dtype == torch.float32
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(items), torch.from_numpy(users))
    torch.testing.assert_close(scores, expected)


@pytest.mark.parametrize("name", ["cosrec", "cosrec-base"])
def test_checkpoint_round_trip(data, tmp_path, name: str):
    model = small_model(data, name=name)
    fit(model, data, config(epochs=1))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    loaded = load_checkpoint(path)
    assert not loaded.training
    assert loaded.name == name
    assert loaded.hyperparameters() == model.hyperparameters()
    users, items = np.arange(1, 6), np.tile(np.arange(1, 6), (5, 1))
    torch.testing.assert_close(
        torch_scorer(loaded)(users, items), torch_scorer(model)(users, items)
    )


def test_refuses_anything_but_the_plain_checkpoint_dict(data, tmp_path):
    model = small_model(data)
    pickled_module = tmp_path / "module.pt"
    torch.save(model, pickled_module)  # needs code execution to load: refused
    bare_state_dict = tmp_path / "state.pt"
    torch.save(model.state_dict(), bare_state_dict)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path in (pickled_module, bare_state_dict, garbage):
        with pytest.raises(ValueError, match="not a cosrec checkpoint"):
            load_checkpoint(path)

    save_checkpoint(tmp_path / "good.pt", model)
    content = torch.load(tmp_path / "good.pt", weights_only=True)
    content["num_items"] += 1  # the weights no longer fit the model it describes
    torch.save(content, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="does not match"):
        load_checkpoint(tmp_path / "mismatch.pt")


def test_cuda_graphs_only_where_they_are_correct_cuda_float32_one_process() -> None:
    cuda = TrainConfig(device="cuda")
    assert uses_cuda_graphs(cuda)
    assert not uses_cuda_graphs(cuda, processes=2)  # DDP's hooks are not captured
    assert not uses_cuda_graphs(TrainConfig(device="cuda", bf16=True))
    assert not uses_cuda_graphs(TrainConfig(device="cuda", cuda_graphs=False))
    assert not uses_cuda_graphs(TrainConfig(device="cpu"))
    assert training_path(TrainConfig(device="cpu")) == "eager steps on cpu, float32"
