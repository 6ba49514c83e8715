"""Data-parallel training over the processes of a `torch.distributed` group (PyTorch DDP), as
`training.fit` runs it when a process group of several processes is up (`torchrun`, see
`training.distributed`).

Every process (rank) runs the same seeded loop, so all draw the same permutation, negatives
and generic-user draws; each takes its own contiguous part of every global batch
(`TrainConfig.batch_size` rows, split as evenly as the rows allow), and the model, wrapped in
`DistributedDataParallel`, averages the gradients, so every rank takes the same optimiser step.
Each rank's loss is weighted by its share of the batch, so that the averaged gradient is the
gradient of the global batch's loss even when the last batch does not split evenly. The loss
reported per batch is the global batch's (summed over ranks), as one process reports it.

What differs from one process: BatchNorm statistics are those of each rank's part of the batch
(DDP keeps rank 0's running statistics), and dropout masks are drawn per rank over fewer rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.losses import batch_loss

RANK_LOCAL_SETTINGS = ("progress", "device")  # may differ between ranks (the bar: rank 0's)


def running() -> bool:
    """Whether a process group of several processes is up (training is then data-parallel)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class DataParallel:
    """One rank's view of data-parallel training of one model (see the module docstring)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        self.device = device
        # Broadcasts rank 0's parameters and buffers: every rank starts from the same weights.
        self.wrapped = DistributedDataParallel(model)

    @classmethod
    def of_process_group(
        cls, model: nn.Module, device: torch.device, config: Any, data: Any
    ) -> DataParallel | None:
        """None in one process; else this rank's view, after checking that every rank trains
        with the same settings (`config`, a `TrainConfig`) on the same `data` (`Sequences`)."""
        if not running():
            return None
        parallel = cls(model, device)
        settings = {k: v for k, v in asdict(config).items() if k not in RANK_LOCAL_SETTINGS}
        parallel.check_same(repr((sorted(settings.items()), data.fingerprint())))
        return parallel

    def check_same(self, description: str) -> None:
        """Raises unless every rank passes the same `description` (a rank that trains other
        data or settings would otherwise silently average unrelated gradients, or hang)."""
        digest = int.from_bytes(hashlib.sha256(description.encode()).digest()[:7], "big")
        extremes = torch.tensor([digest, -digest], dtype=torch.int64, device=self.device)
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        if extremes.tolist() != [digest, -digest]:
            raise ValueError(f"rank {self.rank}: the ranks do not train the same data and settings")

    def part(self, rows: int) -> tuple[int, int]:
        """This rank's rows [start, stop) of a global batch of `rows` rows."""
        return rows * self.rank // self.world_size, rows * (self.rank + 1) // self.world_size

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        items: torch.Tensor,
        users: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None,
        bf16: bool = False,
        loss_name: str = "bce",
    ) -> torch.Tensor:
        """`training.fit.train_step` on this rank's part of the global batch given; returns the
        global batch's loss (detached; the same on every rank). `model` is the wrapped one."""
        del model  # the DDP wrapper around it runs the forward pass
        rows = len(items)
        start, stop = self.part(rows)
        share = (stop - start) / rows
        if stop == start:  # fewer rows than ranks: one row at weight 0 keeps this rank in step
            start, stop = 0, 1
        loss = batch_loss(
            self.wrapped,
            loss_name,
            items[start:stop],
            users[start:stop],
            targets[start:stop],
            None if negatives is None else negatives[start:stop],
            bf16,
        )
        optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks: weighted by world_size * share, the average is the
        # gradient of the share-weighted sum of the parts' losses, the global batch's loss.
        weight = self.world_size * share
        (loss if weight == 1.0 else loss * weight).backward()
        optimizer.step()
        total = loss.detach() * share
        dist.all_reduce(total)
        return total

    def agree(self, stop: bool) -> bool:
        """Rank 0's decision (to stop after this epoch), on every rank."""
        flag = torch.tensor([int(stop)], dtype=torch.int64, device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())


__all__ = ["DataParallel", "running"]
