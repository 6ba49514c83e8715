"""Training on several processes with PyTorch DDP: `torchrun --nproc_per_node N -m cosrec train`.

`start` joins the process group that `torchrun` describes in the environment (`RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`): gloo on CPU, NCCL on CUDA (each
process on the GPU of its local rank). From then on `training.fit.fit` is data-parallel
(`training.data_parallel`): the global batch is `TrainConfig.batch_size` rows, each of the N
processes trains on batch_size / N of them, and DDP averages the gradients.

Rank 0 runs the whole pipeline (`training.pipeline.run_pipeline`: it evaluates, logs, exports,
writes files); every other rank runs `follow_pipeline`, the same seeded trainings without any
of that, stopping when rank 0 stops.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from model import build_model
from training.fit import TrainConfig, fit, set_seed
from training.split import Splits

# How long a rank waits for the others at a collective: rank 0 evaluates between epochs while
# the others wait for its decision to go on.
TIMEOUT = timedelta(hours=1)


@dataclass(frozen=True)
class Process:
    """This process's place in the group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_environment() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) as torchrun sets them; None outside torchrun."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, world_size, int(os.environ.get("LOCAL_RANK", rank))


def backend_for(device: str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def start(device: str = "cpu") -> Process | None:
    """Joins torchrun's process group (see the module docstring); None outside torchrun or
    with a single process, where training stays on the one-process path."""
    environment = torchrun_environment()
    if environment is None or environment[1] < 2:
        return None
    rank, world_size, local_rank = environment
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
        atexit.register(stop)
    return Process(rank, world_size, local_rank, backend)


def stop() -> None:
    """Leaves the process group (at exit, after `start`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def follow_pipeline(
    splits: Splits, model_name: str, hyperparameters: dict[str, Any], config: TrainConfig
) -> None:
    """What a rank other than 0 runs while rank 0 runs `training.pipeline.run_pipeline` with
    the same arguments: the same two seeded trainings (on the validation split, then on the
    test split), its part of every batch, nothing evaluated or written. Each training lasts as
    long as rank 0's (rank 0 decides when to stop)."""
    for split in (splits.validation, splits.test):
        set_seed(config.seed)  # the initial weights, as training.pipeline.training_run
        model = build_model(
            model_name, split.train.num_users, split.train.num_items, L=config.L, **hyperparameters
        )
        fit(model, split.train, replace(config, progress=False))


__all__ = ["Process", "backend_for", "follow_pipeline", "start", "stop", "torchrun_environment"]
