"""Negative sampling: uniform over the items a user never touched in training."""

from __future__ import annotations

import numpy as np
import pytest

from training.sampling import NegativeSampler

NUM_ITEMS = 12


@pytest.fixture
def sequences() -> list[np.ndarray]:
    return [np.array([2, 3, 5, 3]), np.array([1]), np.array([], dtype=np.int64), np.arange(1, 12)]


def test_negatives_are_never_padding_nor_the_users_own_items(sequences):
    sampler = NegativeSampler(sequences, NUM_ITEMS)
    users = np.repeat(np.arange(0, len(sequences) + 1), 500)
    negatives = sampler.sample(users, 3, np.random.default_rng(0))
    assert negatives.shape == (len(users), 3)
    assert negatives.min() >= 1
    assert negatives.max() <= NUM_ITEMS
    for user, row in zip(users, negatives, strict=True):
        own = set(sequences[user - 1].tolist()) if user else set()
        assert not own & set(row.tolist())


def test_negatives_are_uniform_over_the_candidates(sequences):
    sampler = NegativeSampler(sequences, NUM_ITEMS)
    draws = 90_000
    negatives = sampler.sample(np.full(draws, 1), 1, np.random.default_rng(1)).ravel()
    counts = np.bincount(negatives, minlength=NUM_ITEMS + 1)
    candidates = sorted(set(range(1, NUM_ITEMS + 1)) - {2, 3, 5})
    assert set(np.flatnonzero(counts)) == set(candidates)
    expected = draws / len(candidates)
    # 10,000 expected per item: 5 standard deviations is about 5%.
    assert np.all(np.abs(counts[candidates] - expected) < 0.05 * expected)


def test_the_only_candidate_is_always_drawn(sequences):
    sampler = NegativeSampler(sequences, NUM_ITEMS)  # user 4 has every item but 12
    negatives = sampler.sample(np.full(50, 4), 2, np.random.default_rng(2))
    assert np.all(negatives == 12)


def test_same_generator_state_same_negatives(sequences):
    sampler = NegativeSampler(sequences, NUM_ITEMS)
    users = np.array([1, 2, 3, 4, 0] * 20)
    first = sampler.sample(users, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(first, sampler.sample(users, 3, np.random.default_rng(7)))


def test_refuses_a_user_with_every_item_and_out_of_range_items():
    with pytest.raises(ValueError, match="every item"):
        NegativeSampler([np.arange(1, NUM_ITEMS + 1)], NUM_ITEMS)
    with pytest.raises(ValueError, match=r"1\.\.12"):
        NegativeSampler([np.array([0, 4])], NUM_ITEMS)
