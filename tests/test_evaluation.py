"""The vectorised evaluation against a plain per-user loop written from the reference
Caser/CosRec `evaluation.py`, and on a case worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contract.ids import Vocabulary
from training.dataset import Sequences, Split
from training.evaluation import evaluate

KS = (1, 5, 10)


def make_split(train: list[list[int]], test: list[list[int]], num_items: int) -> Split:
    users = Vocabulary(tuple(f"u{k}" for k in range(1, len(train) + 1)))
    items = Vocabulary(tuple(f"i{j}" for j in range(1, num_items + 1)))

    def as_sequences(rows: list[list[int]]) -> Sequences:
        return Sequences(users, items, tuple(np.array(r, dtype=np.int64) for r in rows))

    return Split(train=as_sequences(train), test=as_sequences(test))


def table_score_fn(split: Split, table: np.ndarray):
    """score_fn that returns fixed per-user scores, and checks it is given the right inputs."""

    def score_fn(users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        assert users.dtype == np.int64
        assert len(histories) == len(users)
        for user, history in zip(users, histories, strict=True):
            np.testing.assert_array_equal(history, split.train.sequences[user - 1])
        return torch.from_numpy(table[users])

    return score_fn


def loop_evaluate(split: Split, table: np.ndarray, ks=KS) -> dict[str, float]:
    """One user at a time, as the reference does; the padding item is left out of the ranking
    and equal scores are ranked by item index (a stable argsort)."""
    apks, precisions, recalls = [], {k: [] for k in ks}, {k: [] for k in ks}
    for user, (train, test) in enumerate(
        zip(split.train.sequences, split.test.sequences, strict=True), start=1
    ):
        if len(test) == 0:
            continue
        ranking = np.argsort(-table[user].astype(np.float64), kind="stable")
        rated = {*train.tolist(), 0}
        predictions = [int(p) for p in ranking if p not in rated]
        targets = set(test.tolist())
        for k in ks:
            hits = len(set(predictions[:k]) & targets)
            precisions[k].append(hits / len(predictions[:k]))
            recalls[k].append(hits / len(targets))
        score, hits = 0.0, 0
        for position, item in enumerate(predictions, start=1):
            if item in targets:
                hits += 1
                score += hits / position
        apks.append(score / len(targets))
    result = {"map": float(np.mean(apks))}
    for k in ks:
        result[f"prec@{k}"] = float(np.mean(precisions[k]))
        result[f"recall@{k}"] = float(np.mean(recalls[k]))
    return result | {"users": len(apks)}


def random_case(seed: int, num_users: int = 300, num_items: int = 60):
    """Random train/test lists with repeats, test items that are also training items, users
    without test items, and items seen only in test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for _ in range(num_users):
        train.append(rng.integers(1, num_items - 5, size=rng.integers(0, 40)).tolist())
        test.append(rng.integers(1, num_items + 1, size=rng.integers(0, 12)).tolist())
    return make_split(train, test, num_items), rng


def assert_close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, abs=1e-9, rel=0), name


def test_matches_the_loop_on_random_float64_scores() -> None:
    split, rng = random_case(seed=0)
    table = rng.standard_normal((split.train.num_users + 1, split.train.num_items + 1))
    table[:, 0] = 10.0  # padding scored highest: it must still never be recommended
    result = evaluate(table_score_fn(split, table), split, batch_size=64)
    assert result["users"] == sum(len(t) > 0 for t in split.test.sequences)
    assert_close(result, loop_evaluate(split, table))


def test_matches_the_loop_on_float32_scores_with_many_ties() -> None:
    split, rng = random_case(seed=1)
    # Few distinct values: ties everywhere, ranked by item index in both implementations.
    table = rng.integers(-3, 4, size=(split.train.num_users + 1, split.train.num_items + 1))
    table = table.astype(np.float32)
    table[:, 1:4] = [-0.0, 0.0, -np.inf]  # signed zeros tie; -inf still ranks
    result = evaluate(table_score_fn(split, table), split, batch_size=50)
    assert_close(result, loop_evaluate(split, table))


def test_bfloat16_scores_take_the_float32_path() -> None:
    split, rng = random_case(seed=2)
    table = torch.from_numpy(rng.standard_normal((split.train.num_users + 1, 61))).bfloat16()

    def score_fn(users: np.ndarray, _histories: list[np.ndarray]) -> torch.Tensor:
        return table[torch.from_numpy(users)]

    result = evaluate(score_fn, split)
    assert_close(result, loop_evaluate(split, table.float().numpy()))


def test_a_case_worked_by_hand() -> None:
    # One user, items 1..5; trained on 1; test items 3 and 5 and 1 (1 cannot be hit).
    split = make_split([[1]], [[3, 5, 1, 3]], num_items=5)
    table = np.array([[0, 0, 0, 0, 0, 0], [9.0, 8.0, 0.5, 0.9, 0.1, 0.3]])
    # Ranking without padding and item 1: 3 (0.9), 2 (0.5), 5 (0.3), 4 (0.1).
    result = evaluate(table_score_fn(split, table), split, ks=(1, 2, 10))
    targets = 3  # {3, 5, 1}: a set, 1 included
    assert result == pytest.approx(
        {
            "map": (1 / 1 + 2 / 3) / targets,
            "prec@1": 1.0,
            "prec@2": 0.5,
            "prec@10": 2 / 4,  # only 4 items are left to rank
            "recall@1": 1 / targets,
            "recall@2": 1 / targets,
            "recall@10": 2 / targets,
            "users": 1,
        },
        abs=1e-12,
    )


def test_rejects_wrong_shapes_and_empty_tests() -> None:
    split = make_split([[1, 2]], [[3]], num_items=4)
    with pytest.raises(ValueError, match="expected"):
        evaluate(lambda users, _histories: torch.zeros(len(users), 4), split)
    empty = make_split([[1, 2]], [[]], num_items=4)
    with pytest.raises(ValueError, match="no user has test items"):
        evaluate(lambda users, _histories: torch.zeros(len(users), 5), empty)


@pytest.mark.parametrize("max_hits", [0, 10_000], ids=["sort", "comparison"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_both_ways_of_ranking_hits_match_the_loop(monkeypatch, max_hits, dtype) -> None:
    """Rows sorted whole, or each hit's rank counted by comparison (sparse test sets): the
    same figures, ties and -inf included."""
    import training.evaluation

    monkeypatch.setattr(training.evaluation, "RANK_BY_COMPARISON_MAX_HITS", max_hits)
    split, rng = random_case(seed=3)
    table = rng.integers(-3, 4, size=(split.train.num_users + 1, split.train.num_items + 1))
    table = table.astype(dtype)
    table[:, 1:4] = [-0.0, 0.0, -np.inf]
    table[::7] += rng.standard_normal(table[::7].shape).astype(dtype)  # some rows without ties
    result = evaluate(table_score_fn(split, table), split, batch_size=40)
    assert_close(result, loop_evaluate(split, table))
