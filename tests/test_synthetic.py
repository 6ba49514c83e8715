"""The generated log: deterministic, well formed, and sequential enough that the previous
item predicts the next one far better than popularity does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from contract.ids import input_rows
from training.evaluation import evaluate
from training.readers import read_csv
from training.split import chronological_split
from training.synthetic import generate_log, write_log_csv


def test_same_seed_same_log_other_seed_other_log() -> None:
    first, again, other = generate_log(seed=3), generate_log(seed=3), generate_log(seed=4)
    assert first.fingerprint() == again.fingerprint()
    assert first.fingerprint() != other.fingerprint()


def test_log_is_well_formed() -> None:
    log = generate_log(num_users=50, num_items=40, length_range=(5, 45), seed=0)
    assert log.users.ids[:2] == ("u1", "u2")
    assert log.items.ids[-1] == "i40"
    assert log.num_users == 50
    for seq in log.sequences:
        assert 5 <= len(seq) <= 40  # capped at the catalogue: no item is taken twice
        assert len(set(seq.tolist())) == len(seq)
        assert seq.min() >= 1
        assert seq.max() <= 40


def test_previous_item_beats_popularity() -> None:
    split = chronological_split(generate_log(seed=0))
    columns = split.train.num_items + 1
    counts = np.bincount(np.concatenate(split.train.sequences), minlength=columns).astype(float)
    transitions = np.zeros((columns, columns))
    for seq in split.train.sequences:
        np.add.at(transitions, (seq[:-1], seq[1:]), 1.0)

    def popularity(users: np.ndarray, _histories: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.tile(counts, (len(users), 1)))

    def first_order(_users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        # Transition counts from the last item; popularity only breaks their ties.
        last = input_rows(histories, 1)[:, -1]
        return torch.from_numpy(transitions[last] + counts / counts.sum() / 2)

    baseline = evaluate(popularity, split)
    sequential = evaluate(first_order, split)
    # Measured at seed 0: popularity MAP 0.272, Prec@1 0.270; first order 0.332, 0.565.
    assert sequential["map"] > baseline["map"] + 0.03
    assert sequential["prec@1"] > 1.5 * baseline["prec@1"]


def test_csv_round_trip(tmp_path: Path) -> None:
    log = generate_log(num_users=20, num_items=30, length_range=(3, 9), seed=1)
    write_log_csv(log, tmp_path / "log.csv")
    back = read_csv(tmp_path / "log.csv")
    assert back.users.ids == log.users.ids
    for original, read in zip(log.sequences, back.sequences, strict=True):
        assert [log.items.external(int(i)) for i in original] == [
            back.items.external(int(i)) for i in read
        ]
