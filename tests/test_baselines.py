"""The paper's baselines: one interface, trained by the shared loop, exported to the bundle."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from contract.bundle import load_bundle
from model import build_model
from training.checkpoint import load_checkpoint, save_checkpoint
from training.dataset import Sequences
from training.evaluation import evaluate
from training.export import export_bundle
from training.fit import TrainConfig, fit
from training.planted import planted_skip_sequences
from training.scoring import torch_scorer
from training.split import chronological_split
from training.synthetic import generate_log

NUM_USERS, NUM_ITEMS, L = 30, 40, 5
BASELINES = {
    "poprec": {},
    "bpr": {"d": 8},
    "fmc": {"d": 8},
    "fpmc": {"d": 8},
    "gru4rec": {"d": 8},
    "caser": {"d": 8},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data() -> Sequences:
    return generate_log(num_users=NUM_USERS, num_items=NUM_ITEMS, length_range=(6, 18), seed=4)


def _trained(name: str, data: Sequences) -> torch.nn.Module:
    """Counted (PopRec) or trained two epochs, so no weight is left at its initial value."""
    torch.manual_seed(0)
    model = build_model(name, data.num_users, data.num_items, L=L, **BASELINES[name])
    if getattr(model, "trainable", True):
        fit(model, data, TrainConfig(epochs=2, lr=1e-2, L=L, progress=False))
    else:
        model.fit_counts(data.item_counts())
    return model.eval()


def _batch(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    items = rng.integers(1, NUM_ITEMS + 1, size=(size, L), dtype=np.int64)
    items[0, :3] = 0  # a left-padded history
    users = rng.integers(1, NUM_USERS + 1, size=size, dtype=np.int64)
    users[0] = 0  # the generic user
    return items, users


@pytest.fixture(scope="module", params=list(BASELINES))
def trained(request):
    data = _data()
    return _trained(request.param, data), data


def test_target_scores_are_the_full_scores_gathered(trained):
    model, _ = trained
    items, users = (torch.from_numpy(a) for a in _batch(np.random.default_rng(0), 16))
    targets = torch.from_numpy(np.random.default_rng(1).integers(1, NUM_ITEMS + 1, size=(16, 6)))
    with torch.no_grad():
        full = model(items, users)
        picked = model(items, users, targets)
    assert full.shape == (16, NUM_ITEMS + 1)
    assert picked.shape == (16, 6)
    torch.testing.assert_close(picked, full.gather(1, targets))
    assert full[:, 1:].std() > 0  # scores that can rank items


def test_checkpoint_round_trip_gives_the_same_scores(trained, tmp_path):
    model, _ = trained
    save_checkpoint(tmp_path / "model.pt", model)
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert (loaded.name, loaded.hyperparameters()) == (model.name, model.hyperparameters())
    items, users = (torch.from_numpy(a) for a in _batch(np.random.default_rng(2), 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(items, users), model(items, users))


def test_onnx_bundle_matches_pytorch_and_its_int8_graph_loads(trained, tmp_path):
    model, data = trained
    bundle = export_bundle(model, data, tmp_path / "bundle")
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    for size in (1, 33):
        items, users = _batch(np.random.default_rng(size), size)
        (onnx_scores,) = session.run(["scores"], {"items": items, "users": users})
        with torch.no_grad():
            expected = model(torch.from_numpy(items), torch.from_numpy(users))[:, 1:].numpy()
        assert onnx_scores.shape == (size, NUM_ITEMS)
        np.testing.assert_allclose(onnx_scores, expected, rtol=1e-4, atol=1e-5)
    # every family's int8 graph verifies and scores the catalogue's width
    int8_scores = load_bundle(bundle, precision="int8").score(items, users)
    assert int8_scores.shape == (33, NUM_ITEMS)
    assert np.isfinite(int8_scores).all()


def test_poprec_scores_are_training_counts():
    data = _data()
    model = _trained("poprec", data)
    counts = np.bincount(np.concatenate(data.sequences), minlength=NUM_ITEMS + 1)
    items, users = (torch.from_numpy(a) for a in _batch(np.random.default_rng(3), 4))
    scores = model(items, users)
    assert scores[:, 0].eq(0).all()  # padding is never popular
    np.testing.assert_array_equal(scores[0, 1:].numpy(), counts[1:])
    assert not any(p.requires_grad for p in model.parameters())


def test_fmc_beats_popularity_on_generated_sequences():
    """generate_log's next item follows the last one most of the time: a Markov chain sees it."""
    split = chronological_split(generate_log(num_users=200, num_items=100, seed=5))
    torch.manual_seed(0)
    popular = build_model("poprec", split.train.num_users, split.train.num_items)
    popular.fit_counts(split.train.item_counts())
    fmc = build_model("fmc", split.train.num_users, split.train.num_items, d=16)
    fit(fmc, split.train, TrainConfig(epochs=10, lr=1e-2, progress=False))
    popular_map = evaluate(torch_scorer(popular), split)["map"]
    fmc_map = evaluate(torch_scorer(fmc), split)["map"]
    assert fmc_map > 1.2 * popular_map, (fmc_map, popular_map)


def _next_item_hit_rate(model: torch.nn.Module, data: Sequences, start: int) -> float:
    """How often the top-scored item is the true next item, at positions start.. of each user."""
    sequences = np.stack(data.sequences)
    users = torch.arange(1, data.num_users + 1)
    hits = []
    model.eval()
    with torch.no_grad():
        for t in range(start, sequences.shape[1]):
            scores = model(torch.from_numpy(sequences[:, t - L : t]), users)
            top = scores[:, 1:].argmax(dim=1).numpy() + 1
            hits.append(top == sequences[:, t])
    return float(np.mean(hits))


def test_sequence_models_learn_the_planted_skip_pattern():
    """x_t = f(x_{t-2}): invisible to a first-order chain, learnable from the last L items."""
    num_items, cut = 100, 24
    data = planted_skip_sequences(num_users=300, num_items=num_items, length=30, seed=0)
    train = Sequences(data.users, data.items, tuple(seq[:cut] for seq in data.sequences))
    chance = 1 / num_items
    rates = {}
    for name, d in (("fmc", 16), ("gru4rec", 32), ("caser", 16)):
        torch.manual_seed(0)
        model = build_model(name, data.num_users, num_items, L=L, d=d)
        fit(model, train, TrainConfig(epochs=10, lr=1e-2, L=L, progress=False))
        rates[name] = _next_item_hit_rate(model, data, cut)
    assert rates["fmc"] < 3 * chance, rates
    assert rates["gru4rec"] > 4 * chance, rates
    assert rates["caser"] > 8 * chance, rates
