"""Training windows and prediction inputs cut from item sequences."""

from __future__ import annotations

import numpy as np

from training.instances import training_instances


def reference_windows(sequences, L: int, T: int):
    """The reference's sliding window, one window at a time (the loop we vectorised)."""
    users, inputs, targets = [], [], []
    for user, seq in enumerate(sequences, start=1):
        seq = list(seq)
        if not seq:
            continue
        if len(seq) < L + T:
            seq = [0] * (L + T - len(seq)) + seq
        for start in range(len(seq) - L - T + 1):
            users.append(user)
            inputs.append(seq[start : start + L])
            targets.append(seq[start + L : start + L + T])
    return np.array(users), np.array(inputs).reshape(-1, L), np.array(targets).reshape(-1, T)


def test_the_reference_example():
    instances = training_instances([np.arange(1, 10)], L=5, T=3)
    np.testing.assert_array_equal(instances.inputs, [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6]])
    np.testing.assert_array_equal(instances.targets, [[6, 7, 8], [7, 8, 9]])
    np.testing.assert_array_equal(instances.users, [1, 1])


def test_a_short_sequence_gives_one_left_padded_window_and_an_empty_one_none():
    instances = training_instances([np.array([4, 5, 6]), np.array([], dtype=np.int64)], L=5, T=3)
    np.testing.assert_array_equal(instances.inputs, [[0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(instances.targets, [[4, 5, 6]])
    np.testing.assert_array_equal(instances.users, [1])


def test_matches_the_window_by_window_loop_on_random_sequences():
    rng = np.random.default_rng(3)
    sequences = [rng.integers(1, 50, size=rng.integers(0, 30)) for _ in range(200)]
    for L, T in [(5, 3), (1, 1), (4, 2)]:
        instances = training_instances(sequences, L, T)
        users, inputs, targets = reference_windows(sequences, L, T)
        np.testing.assert_array_equal(instances.users, users)
        np.testing.assert_array_equal(instances.inputs, inputs)
        np.testing.assert_array_equal(instances.targets, targets)
        assert instances.inputs.dtype == instances.targets.dtype == np.int64


def test_instance_count_follows_the_reference_formula():
    lengths = [8, 9, 20, 3, 1]
    instances = training_instances([np.arange(1, n + 1) for n in lengths], L=5, T=3)
    assert len(instances) == sum(n - 7 if n >= 8 else 1 for n in lengths)
