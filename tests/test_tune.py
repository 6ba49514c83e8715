"""The search (training.tune, training.search_space), `cosrec tune` and `cosrec train --model
auto`, on small generated data."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import optuna
import pytest

from contract.bundle import load_bundle
from cosrec.cli import main
from model import MODELS, build_model
from training.dataset import Sequences, Split
from training.evaluation import evaluate
from training.fit import TrainConfig, fit
from training.scoring import torch_scorer
from training.search_space import describe, reference_params, settings_of, suggest
from training.split import Splits, splits_of
from training.synthetic import generate_log, write_log_csv
from training.tune import Budget, choose_family, retrain, search, tune_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = Budget(trials=3, seconds=60, max_epochs=3, patience=2)
BASE = TrainConfig(progress=False, batch_size=128)


@pytest.fixture(scope="module")
def small_log(tmp_path_factory) -> list[str]:
    """The data arguments of a small CSV log (the commands' tests stay quick)."""
    path = tmp_path_factory.mktemp("log") / "log.csv"
    write_log_csv(generate_log(num_users=40, num_items=30, length_range=(12, 20), seed=1), path)
    return ["--data", str(path), "--format", "csv"]


@pytest.fixture(scope="module")
def splits() -> Splits:
    return splits_of(generate_log(num_users=60, num_items=30, length_range=(12, 24), seed=7))


def test_every_model_has_a_search_space_whose_reference_builds():
    for name in MODELS:
        settings = settings_of(name, reference_params(name))
        model = build_model(name, 5, 9, L=settings.training.get("L", 5), **settings.hyperparameters)
        assert model.name == name
        json.dumps(describe(name))
    assert settings_of("cosrec", reference_params("cosrec")).hyperparameters["block_channels"] == [
        128,
        256,
    ]
    assert settings_of("cosrec", reference_params("cosrec")).training == {
        "lr": 1e-3, "lr_decay": 1.0, "weight_decay": 5e-6, "L": 5, "T": 3, "loss": "bce",
        "negatives": 3,
    }  # fmt: skip


@pytest.mark.parametrize("name", [name for name in MODELS if name != "poprec"])
def test_random_settings_of_the_space_train(splits, name: str):
    """Five random draws per family: each builds and trains an epoch (no setting the space
    can draw breaks a model)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(5):
        trial = study.ask()
        settings = settings_of(name, suggest(trial, name))
        train = splits.validation.train
        model = build_model(
            name, train.num_users, train.num_items, L=settings.training["L"],
            **settings.hyperparameters,
        )  # fmt: skip
        history = fit(model, train, replace(BASE, epochs=1, **settings.training))
        assert np.isfinite(history[0].loss)
        study.tell(trial, 0.0)


def test_the_first_trial_is_the_reference_and_the_search_keeps_the_best(splits):
    result = search(splits.validation, "fpmc", QUICK, BASE)
    assert result.trials[0].params == reference_params("fpmc")
    assert 1 <= len(result.trials) <= QUICK.trials
    finished = [t for t in result.trials if t.state != "pruned"]
    assert result.validation_map == max(t.validation_map for t in finished)
    assert result.validation_map >= result.trials[0].validation_map
    at = {r.epoch: r.metrics["map"] for r in result.validation_run}
    assert at[result.selected_epoch] == result.validation_map
    assert result.config.epochs == len(result.validation_run) >= result.selected_epoch


def test_the_search_never_reads_the_test_split(splits):
    """Scrambling the test split's held-out items changes nothing the search decides."""
    rng = np.random.default_rng(0)
    test = splits.test.test
    scrambled = Sequences(
        test.users,
        test.items,
        tuple(rng.integers(1, test.num_items + 1, size=len(s)) for s in test.sequences),
    )
    other = Splits(splits.validation, Split(splits.test.train, scrambled))
    first, _ = tune_model(splits, "fmc", QUICK, BASE)
    second, _ = tune_model(other, "fmc", QUICK, BASE)
    assert first.params == second.params
    assert first.validation_map == second.validation_map
    assert first.selected_epoch == second.selected_epoch


def test_the_time_budget_stops_the_search_after_the_epoch_that_reaches_it(splits):
    result = search(splits.validation, "fpmc", Budget(trials=5, seconds=1e-3, max_epochs=4), BASE)
    assert len(result.trials) == 1
    assert result.trials[0].state == "time budget"
    assert result.trials[0].epochs_run == 1
    assert result.time_budget_reached


def test_the_median_pruner_stops_trials_below_the_median(splits):
    budget = Budget(trials=8, seconds=120, max_epochs=4, patience=4, startup_trials=1,
                    warmup_epochs=0)  # fmt: skip
    result = search(splits.validation, "fmc", budget, BASE)
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned
    assert all(t.epochs_run < budget.max_epochs for t in pruned)


def test_the_retrain_reports_like_the_pipeline(splits):
    found, result = tune_model(splits, "fpmc", QUICK, BASE)
    figures = result.figures()
    assert figures["validation_selected"]["epoch"] == found.selected_epoch
    assert len(result.test_run) == found.config.epochs
    assert figures["paper_protocol"]["map"] >= figures["validation_selected"]["map"]
    kept = evaluate(torch_scorer(result.model), splits.test)
    assert kept["map"] == pytest.approx(figures["validation_selected"]["map"], abs=1e-12)


def test_poprec_is_counted_once(splits):
    found = search(splits.validation, "poprec", QUICK, BASE)
    assert [t.state for t in found.trials] == ["complete"]
    result = retrain(splits, found)
    assert result.figures()["validation_selected"]["epoch"] == 0


def test_choose_family_takes_the_best_validation_map_and_the_first_on_ties():
    assert choose_family({"a": 0.1, "b": 0.3, "c": 0.2}) == "b"
    assert choose_family({"a": 0.3, "b": 0.3}) == "a"
    with pytest.raises(ValueError, match="no family"):
        choose_family({})


def test_cosrec_tune_writes_every_family_and_the_pick(small_log, tmp_path, capsys):
    out = tmp_path / "tune"
    argv = ["tune", *small_log, "--out", str(out), "--models", "fmc,fpmc,poprec",
            "--epochs", "2", "--trials", "2", "--time-budget", "30", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "tune.json").read_text())
    models = report["models"]
    assert set(models) == {"fmc", "fpmc", "poprec"}
    best = max(models, key=lambda n: models[n]["search"]["validation_map"])
    assert report["picked"] == best
    for entry in models.values():
        assert {"paper_protocol", "validation_selected", "machine", "command"} <= set(entry)
        assert entry["search"]["budget"]["trials"] == 2
        assert entry["search"]["trials_run"] <= 2
    assert (out / "fpmc" / "checkpoint.pt").is_file()
    assert "(picked)" in (out / "tune.md").read_text()
    assert f"picked by validation MAP: {best}" in capsys.readouterr().out


def test_train_model_auto_exports_the_family_it_picked(small_log, tmp_path):
    out = tmp_path / "bundle"
    argv = ["train", *small_log, "--model", "auto", "--out", str(out), "--epochs", "1",
            "--trials", "1", "--time-budget", "30", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    families = metrics["auto"]["families"]
    assert set(families) == set(MODELS)
    picked = metrics["auto"]["picked"]
    assert picked == max(families, key=lambda n: families[n]["validation_map"])
    bundle = load_bundle(out)
    assert bundle.manifest.model.name == picked == metrics["model"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--model", "auto", "--lr", "0.1"], "--lr does not apply"),
        (["train", "--model", "auto", "--loss", "softmax"], "--loss does not apply"),
        (["train", "--trials", "3"], "--trials applies only"),
        (["train", "--loss", "softmax", "--negatives", "5"], "--negatives"),
        (["train", "--loss", "hinge"], "--loss"),
        (["tune", "--models", "nope"], "nope"),
        (["tune", "--trials", "0"], "--trials"),
    ],
)
def test_bad_tuning_arguments_give_one_line_and_status_2(argv, fragment, tmp_path, capsys):
    argv = [*argv, "--synthetic", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert fragment in lines[0]


def test_the_accuracy_bench_writes_its_table_with_auto_and_new_users(tmp_path):
    """bench/accuracy.py end to end on a small generated log (the `sequences` format of
    Amazon Beauty): an entry per family with both protocols, `auto`, the new-user measure,
    its command and machine, and the Markdown table."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_accuracy", REPO / "bench" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    log = generate_log(num_users=40, num_items=30, length_range=(12, 20), seed=2)
    path = tmp_path / "log.txt"
    path.write_text(
        "".join(
            f"{user} " + " ".join(log.items.ids[i - 1] for i in seq) + "\n"
            for user, seq in zip(log.users.ids, log.sequences, strict=True)
        )
    )
    argv = ["--dataset", "amazon-beauty", "--data", str(path), "--models", "poprec,fmc,fpmc",
            "--trials", "2", "--time-budget", "20", "--max-epochs", "2",
            "--results", str(tmp_path / "results")]  # fmt: skip
    assert bench.main(argv) == 0
    results = json.loads((tmp_path / "results" / "amazon-beauty.json").read_text())
    for name in ("poprec", "fmc", "fpmc", "auto"):
        assert {"paper_protocol", "validation_selected", "machine", "command"} <= set(results[name])
    picked = results["auto"]["picked"]
    assert results["auto"]["validation_selected"] == results[picked]["validation_selected"]
    trained = {name: results[name]["search"]["validation_map"] for name in ("fmc", "fpmc")}
    expected = picked if picked != "poprec" else max(trained, key=trained.get)
    assert results["new_users"]["model"] == expected
    assert results["new_users"]["held_out_generic_user"]["users"] == 4
    assert results["about"]["command"].startswith("python bench/accuracy.py --dataset")
    table = (tmp_path / "results" / "amazon-beauty.md").read_text()
    assert "**auto** (picked" in table
    assert "Users unseen in training" in table
