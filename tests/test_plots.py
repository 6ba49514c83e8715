"""`cosrec plot filters | history`: real checkpoints and histories rendered to real PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import image

from cosrec.cli import main
from model import build_model
from training.checkpoint import save_checkpoint
from training.fit import TrainConfig, fit
from training.pipeline import run_pipeline
from training.plots import pair_weight_maps
from training.split import splits_of
from training.synthetic import generate_log

L = 5
SMALL_COSREC = {"d": 8, "block_channels": (6, 8), "fc_dim": 12}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; one thread is also faster for tiny nets
    yield
    torch.set_num_threads(threads)


def _assert_real_png(path: Path, min_width: int) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    assert pixels.shape[1] >= min_width
    assert pixels.shape[0] >= 200
    assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def _checkpoint(tmp_path: Path, name: str, **hyperparameters) -> Path:
    data = generate_log(num_users=60, num_items=40, length_range=(10, 20), seed=2)
    torch.manual_seed(0)
    model = build_model(name, data.num_users, data.num_items, L=L, **hyperparameters)
    fit(model, data, TrainConfig(epochs=2, lr=1e-2, L=L, progress=False))
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, model)
    return path


def test_per_pair_weights_are_exact_for_a_whole_grid_kernel():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 16, L, L))  # [C, 2d, L, L]
    maps = pair_weight_maps(weight, L)
    np.testing.assert_allclose(maps[1, 2, 4], np.linalg.norm(weight[1, :, 2, 4]))


def test_a_sliding_kernel_adds_up_its_offsets_and_a_1x1_kernel_is_flat():
    weight = np.ones((2, 4, 3, 3))  # every offset has norm 2
    maps = pair_weight_maps(weight, L)
    assert maps[0, 0, 0] == 2  # a corner is reached by one offset of one position
    assert maps[0, 2, 2] == 2 * 9  # the centre by every offset
    flat = pair_weight_maps(np.random.default_rng(1).normal(size=(4, 16, 1, 1)), L)
    assert np.allclose(flat, flat[:, :1, :1])  # the same weight for every pair


def test_plot_filters_of_a_whole_grid_cosrec(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path, "cosrec", first_kernel=L, **SMALL_COSREC)
    out = tmp_path / "filters.png"
    assert main(["plot", "filters", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--filters", "0,3"]) == 0  # fmt: skip
    assert str(out) in capsys.readouterr().out
    _assert_real_png(out, min_width=400)


def test_plot_history_of_a_real_training_run(tmp_path):
    splits = splits_of(generate_log(num_users=60, num_items=40, length_range=(10, 20), seed=2))
    config = TrainConfig(epochs=3, lr=1e-2, progress=False)
    result = run_pipeline(splits, "fmc", {"d": 8}, config)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({**result.figures(), "history": result.history()}))
    out = tmp_path / "history.png"
    assert main(["plot", "history", "--metrics", str(metrics), "--out", str(out)]) == 0
    _assert_real_png(out, min_width=800)


def test_plot_errors_are_one_line_and_status_2(tmp_path, capsys):
    not_cosrec = _checkpoint(tmp_path, "fmc", d=8)
    cases = [
        (["filters", "--checkpoint", str(not_cosrec)], "has no pairwise convolution"),
        (["filters", "--checkpoint", str(tmp_path / "none.pt")], "no such file"),
        (["history", "--metrics", str(not_cosrec.with_suffix(".json"))], "no such file"),
    ]
    (tmp_path / "empty.json").write_text("{}")
    cases.append((["history", "--metrics", str(tmp_path / "empty.json")], "no per-epoch history"))
    for argv, fragment in cases:
        assert main(["plot", *argv, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert fragment in err, err
        assert len(err.strip().splitlines()) == 1
