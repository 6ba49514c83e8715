"""One declared interface (issue 11): every network is a checked SequentialRecommender."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from model import MODELS, PopRec, SequentialRecommender, build_model

NUM_USERS, NUM_ITEMS, BATCH = 7, 11, 3

# Away from the defaults, so that a hyper-parameter the round trip drops shows up.
SMALL: dict[str, dict[str, Any]] = {
    "cosrec": {"L": 4, "d": 6, "block_channels": (4, 8), "fc_dim": 5, "dropout": 0.25},
    "cosrec-base": {"L": 4, "d": 6, "hidden_dim": 9, "dropout": 0.25},
    "poprec": {"L": 4},
    "bpr": {"L": 4, "d": 6},
    "fmc": {"L": 4, "d": 6},
    "fpmc": {"L": 4, "d": 6},
    "gru4rec": {"L": 4, "d": 6, "dropout": 0.25},
    "caser": {"L": 4, "d": 6, "vertical_filters": 2, "horizontal_filters": 3, "dropout": 0.25},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_every_model_has_small_settings_here():
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_is_a_sequential_recommender_under_its_own_name(name: str):
    model_class = MODELS[name]
    assert issubclass(model_class, SequentialRecommender)
    assert model_class.name == name
    model = build_model(name, NUM_USERS, NUM_ITEMS, **SMALL[name])
    assert (model.num_users, model.num_items, model.L) == (NUM_USERS, NUM_ITEMS, 4)
    assert isinstance(model.trainable, bool)


def test_a_subclass_without_a_name_is_refused_when_the_class_is_created():
    with pytest.raises(TypeError, match="name"):

        class Nameless(SequentialRecommender):
            def sequence_features(self, items: torch.Tensor, users: torch.Tensor):
                return self.output.weight(items[:, -1]) + 0 * users[:, None]


def test_a_subclass_must_declare_its_own_name_not_inherit_one():
    with pytest.raises(TypeError, match="name"):

        class Copycat(PopRec):
            pass


def test_hyperparameter_names_without_the_window_l_are_refused_when_the_class_is_created():
    with pytest.raises(TypeError, match="'L'"):

        class NoWindow(SequentialRecommender):
            name: ClassVar[str] = "no-window"
            hyperparameter_names: ClassVar[tuple[str, ...]] = ("d",)

            def sequence_features(self, items: torch.Tensor, users: torch.Tensor):
                return self.output.weight(items[:, -1]) + 0 * users[:, None]


@pytest.mark.parametrize("name", list(MODELS))
def test_hyperparameters_round_trip_through_build_model(name: str):
    model = build_model(name, NUM_USERS, NUM_ITEMS, **SMALL[name])
    hyperparameters = model.hyperparameters()
    assert set(hyperparameters) == set(type(model).hyperparameter_names)
    assert all(not isinstance(value, tuple) for value in hyperparameters.values())  # JSON lists
    rebuilt = build_model(model.name, model.num_users, model.num_items, **hyperparameters)
    assert rebuilt.hyperparameters() == hyperparameters
    shapes = {key: tensor.shape for key, tensor in model.state_dict().items()}
    assert {key: tensor.shape for key, tensor in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict())  # strict


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_gives_b_by_k_with_targets_and_b_by_every_item_index_without(name: str):
    model = build_model(name, NUM_USERS, NUM_ITEMS, **SMALL[name]).eval()
    items = torch.randint(0, NUM_ITEMS + 1, (BATCH, model.L))
    users = torch.randint(0, NUM_USERS + 1, (BATCH,))
    targets = torch.randint(1, NUM_ITEMS + 1, (BATCH, 5))
    with torch.no_grad():
        assert model(items, users, targets).shape == (BATCH, 5)
        assert model(items, users).shape == (BATCH, NUM_ITEMS + 1)
        assert model(items, users, targets=None).shape == (BATCH, NUM_ITEMS + 1)


def test_poprec_fit_counts_takes_item_counts_and_scores_padding_zero():
    counts = np.arange(NUM_ITEMS + 1, dtype=np.int64) + 3
    model = build_model("poprec", NUM_USERS, NUM_ITEMS).fit_counts(counts)
    assert counts[0] == 3  # the caller's array is left alone
    scores = model(torch.zeros(2, model.L, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    np.testing.assert_array_equal(scores[0].numpy(), np.r_[0, counts[1:]])


@pytest.mark.parametrize("length", [NUM_ITEMS, NUM_ITEMS + 2])
def test_poprec_fit_counts_refuses_counts_of_the_wrong_length(length: int):
    model = build_model("poprec", NUM_USERS, NUM_ITEMS)
    with pytest.raises(ValueError, match="num_items \\+ 1"):
        model.fit_counts(np.ones(length, dtype=np.int64))
