"""Training on several processes (PyTorch DDP, gloo on CPU) gives what one process gives.

Two processes, each training on its half of every global batch of 128 rows, against one
process with the same global batch, seed and data (training.synthetic, 100 users, 50 items),
4 epochs at lr 1e-2, the loss and test MAP after every epoch:

- CosRec-base without dropout (nothing in it sees how a batch is split): the same computation
  up to float rounding in the gradient sums, which Adam carries along. Measured (torch 2.13,
  CPU): loss within 1e-7 relative, MAP equal to 4 decimals (1.5e-4 and 0.0008 on other data,
  batch 64). Stated: loss within 1e-3 relative, MAP within 0.005.
- CosRec as the README trains it (BatchNorm, dropout 0.5; d 16, channels 8 and 16, fc 32): each
  process normalises its half batch by that half's statistics (DDP keeps rank 0's running
  statistics, which evaluation uses) and draws its own dropout masks, so the runs differ as
  runs with other random draws do. Measured: loss within 0.6% relative, MAP within 0.007; one
  process with seed 1 against seeds 2 to 5: up to 5.3% and 0.021. Stated: loss within 2%
  relative, MAP within 0.02 (3 times the measured gap, at most the spread between seeds).
- `cosrec train --synthetic` under torchrun against the same pipeline in one process (2
  epochs, both runs): measured loss within 0.3%, MAP within 0.006; the same tolerance.

The processes are spawned for real (torch.multiprocessing, gloo on a free local port), and
`cosrec train` runs under `torchrun --standalone`.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import REPO
from cosrec.processes import free_port
from model import build_model
from training.distributed import backend_for, start, torchrun_environment
from training.evaluation import evaluate
from training.fit import TrainConfig, fit, set_seed
from training.pipeline import run_pipeline
from training.scoring import torch_scorer
from training.split import Split, chronological_split, splits_of
from training.synthetic import generate_log

WORLD_SIZE = 2
CONFIG = TrainConfig(epochs=4, batch_size=128, lr=1e-2, progress=False)
RUNS = {  # name: (model, hyperparameters, loss tolerance (relative), MAP tolerance)
    "exact": ("cosrec-base", {"d": 8, "hidden_dim": 16, "dropout": 0.0}, 1e-3, 0.005),
    "cosrec": ("cosrec", {"d": 16, "block_channels": [8, 16], "fc_dim": 32}, 0.02, 0.02),
}


def data() -> Split:
    return chronological_split(generate_log(num_users=100, num_items=50, seed=3))


def curve(model_name: str, hyperparameters: dict, split: Split) -> dict[str, list[float]]:
    """Loss and test MAP after every epoch (MAP measured on rank 0 only)."""
    set_seed(CONFIG.seed)
    model = build_model(model_name, split.train.num_users, split.train.num_items, **hyperparameters)
    maps: list[float] = []

    def measure(_stats) -> None:
        maps.append(evaluate(torch_scorer(model), split)["map"])

    history = fit(model, split.train, CONFIG, measure)
    return {"loss": [stats.loss for stats in history], "map": maps}


def worker(rank: int, port: int, results) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        split = data()
        curves = {name: curve(model, hp, split) for name, (model, hp, *_) in RUNS.items()}
        if rank == 0:
            results.put(curves)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes() -> dict[str, dict[str, list[float]]]:
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(worker, args=(free_port(), results), nprocs=WORLD_SIZE, start_method="spawn")
    return results.get()


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name", list(RUNS))
def test_two_processes_give_the_curve_of_one(two_processes, name: str) -> None:
    model_name, hyperparameters, loss_tolerance, map_tolerance = RUNS[name]
    one = curve(model_name, hyperparameters, data())
    two = two_processes[name]
    assert len(two["loss"]) == len(two["map"]) == CONFIG.epochs
    loss_gap = np.abs(np.subtract(two["loss"], one["loss"])) / np.array(one["loss"])
    map_gap = np.abs(np.subtract(two["map"], one["map"]))
    print(f"{name}: loss within {loss_gap.max():.2e} relative, MAP within {map_gap.max():.4f}")
    assert loss_gap.max() <= loss_tolerance, (one, two)
    assert map_gap.max() <= map_tolerance, (one, two)
    assert one["loss"][-1] < 0.8 * one["loss"][0]  # it learned: the comparison means something


def test_part_of_a_global_batch_covers_it_once() -> None:
    from training.data_parallel import DataParallel

    for world_size in (2, 3, 4):
        for rows in (1, 2, 5, 128, 129):
            parts = []
            for rank in range(world_size):
                parallel = DataParallel.__new__(DataParallel)
                parallel.rank, parallel.world_size = rank, world_size
                parts.append(parallel.part(rows))
            assert parts[0][0] == 0
            assert parts[-1][1] == rows
            assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_outside_torchrun_training_stays_on_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_environment() is None
    assert start("cpu") is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_environment() == (0, 1, 0)
    assert start("cpu") is None  # torchrun with one process: the one-process path
    assert not dist.is_initialized()
    assert (backend_for("cpu"), backend_for("cuda")) == ("gloo", "nccl")


@pytest.mark.usefixtures("one_torch_thread")
def test_cosrec_train_under_torchrun(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m cosrec -- train`: rank 0 alone reports and writes the
    bundle, whose training history is one process's (the same pipeline run here) within the
    tolerance stated for CosRec."""
    model_name, hyperparameters, loss_tolerance, map_tolerance = RUNS["cosrec"]
    channels = ",".join(map(str, hyperparameters["block_channels"]))
    torchrun = Path(sys.executable).with_name("torchrun")
    launch = [str(torchrun), "--standalone", "--nproc_per_node", str(WORLD_SIZE), "-m", "cosrec"]
    train = ["train", "--synthetic", "--epochs", "2", "--lr", str(CONFIG.lr), "--no-progress"]
    train += ["--d", str(hyperparameters["d"]), "--block-channels", channels]
    train += ["--fc-dim", str(hyperparameters["fc_dim"]), "--out", str(tmp_path)]
    done = subprocess.run(
        [*launch, "--", *train],  # `--`: else torchrun's parser takes `--d` for its own option
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("bundle: ") == 1  # printed by rank 0 only
    assert "data-parallel training on 2 processes (gloo)" in done.stderr
    assert done.stderr.count("test epoch 2/2") == 1
    two = json.loads((tmp_path / "metrics.json").read_text())

    config = TrainConfig(**{**two["config"], "progress": False})
    network = {k: v for k, v in two["hyperparameters"].items() if k != "L"}  # L: the config's
    one = run_pipeline(splits_of(generate_log()), model_name, network, config)
    for run, records in one.history().items():
        for a, b in zip(records, two["history"][run], strict=True):
            assert abs(a["loss"] - b["loss"]) <= loss_tolerance * a["loss"], (a, b)
            assert abs(a["metrics"]["map"] - b["metrics"]["map"]) <= map_tolerance, (a, b)
