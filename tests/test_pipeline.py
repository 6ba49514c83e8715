"""Model selection by validation MAP, the paper's protocol beside it, and the new-user measure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.evaluation import evaluate
from training.fit import TrainConfig
from training.new_users import generic_user_scorer, hold_out_users, new_user_experiment
from training.pipeline import (
    EpochRecord,
    PipelineResult,
    best_epoch,
    measured_epochs,
    plot_history,
    run_pipeline,
)
from training.scoring import torch_scorer
from training.split import splits_of
from training.synthetic import generate_log

SMALL = {"d": 8, "block_channels": (8, 16), "fc_dim": 16}
EPOCHS, EVAL_EVERY = 4, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def splits():
    return splits_of(generate_log(num_users=80, num_items=40, length_range=(12, 30), seed=5))


def _config(epochs: int = EPOCHS) -> TrainConfig:
    return TrainConfig(epochs=epochs, progress=False, generic_user_rate=0.1)


@pytest.fixture(scope="module")
def result(splits) -> PipelineResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_pipeline(splits, "cosrec", SMALL, _config(), eval_every=EVAL_EVERY)
    finally:
        torch.set_num_threads(threads)


def test_measured_epochs_are_every_kth_and_the_last():
    assert measured_epochs(7, 3) == {3, 6, 7}
    assert measured_epochs(4, 1) == {1, 2, 3, 4}


def test_best_epoch_takes_the_earliest_of_equal_maps():
    records = [
        EpochRecord(1, 1.0, 0.1),
        EpochRecord(2, 0.9, 0.1, {"map": 0.3}),
        EpochRecord(3, 0.8, 0.1),
        EpochRecord(4, 0.7, 0.1, {"map": 0.3}),
        EpochRecord(5, 0.6, 0.1, {"map": 0.2}),
    ]
    assert best_epoch(records) == 2


def test_both_runs_record_every_epoch_and_measure_on_schedule(result):
    for run in (result.validation_run, result.test_run):
        assert [r.epoch for r in run] == list(range(1, EPOCHS + 1))
        assert {r.epoch for r in run if r.metrics is not None} == {2, 4}
        assert all(np.isfinite(r.loss) and r.seconds > 0 for r in run)


def test_selection_follows_validation_and_the_paper_protocol_follows_test(result):
    assert result.selected_epoch == best_epoch(result.validation_run)
    assert result.paper_epoch == best_epoch(result.test_run)
    test_maps = {r.epoch: r.metrics for r in result.test_run if r.metrics}
    figures = result.figures()
    assert figures["validation_selected"]["epoch"] == result.selected_epoch
    assert figures["validation_selected"]["map"] == test_maps[result.selected_epoch]["map"]
    assert figures["paper_protocol"]["map"] == max(m["map"] for m in test_maps.values())
    assert figures["paper_protocol"]["map"] >= figures["validation_selected"]["map"]


def test_the_kept_model_is_the_one_at_the_selected_epoch(result, splits):
    """Its test figures are those recorded at the selected epoch, and they equal a fresh run
    trained for exactly that many epochs (the retraining the selection stands for)."""
    recorded = result.figures()["validation_selected"]
    kept = evaluate(torch_scorer(result.model), splits.test)
    assert kept["map"] == pytest.approx(recorded["map"], abs=1e-12)

    retrained = run_pipeline(splits, "cosrec", SMALL, _config(result.selected_epoch))
    assert retrained.test_run[-1].metrics["map"] == pytest.approx(recorded["map"], abs=1e-12)
    assert result.model.training is False


def test_history_and_plot(result, tmp_path):
    history = result.history()
    assert len(history["validation_run"]) == len(history["test_run"]) == EPOCHS
    timings = result.timings()
    assert timings["epoch_seconds"] > 0
    assert timings["eval_seconds"] > 0
    plot_history(result, tmp_path / "training.png")
    assert (tmp_path / "training.png").read_bytes().startswith(b"\x89PNG")


def test_held_out_users_are_a_partition(splits):
    known, held_out = hold_out_users(splits.test, 0.25, seed=0)
    assert held_out.train.num_users == 20
    assert known.train.num_users == 60
    assert set(known.train.users.ids).isdisjoint(held_out.train.users.ids)
    assert set(known.train.users.ids) | set(held_out.train.users.ids) == set(
        splits.test.train.users.ids
    )
    original = dict(zip(splits.test.train.users.ids, splits.test.train.sequences, strict=True))
    for user, sequence in zip(held_out.train.users.ids, held_out.train.sequences, strict=True):
        assert np.array_equal(sequence, original[user])


def test_generic_user_scorer_ignores_the_user(result):
    users = np.array([1, 2, 3], dtype=np.int64)
    items = np.array([[1, 2, 3, 4, 5]] * 3, dtype=np.int64)
    scores = generic_user_scorer(result.model)(users, items)
    expected = torch_scorer(result.model)(np.zeros(3, dtype=np.int64), items)
    assert torch.equal(scores, expected)


def test_new_user_experiment_reports_three_measurements(splits):
    report = new_user_experiment(splits.test, "cosrec", SMALL, _config(2), held_out_fraction=0.25)
    assert report["known_users"]["users"] == 60
    assert report["held_out_generic_user"]["users"] == 20
    assert report["held_out_popularity"]["users"] == 20
    for name in ("known_users", "held_out_generic_user", "held_out_popularity"):
        assert 0 < report[name]["map"] <= 1
