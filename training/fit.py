"""The training loop: Eq. (1) of the paper with sampled negatives (or another loss of
`training.losses`), Adam, seeded."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from contract.ids import GENERIC_USER_INDEX
from model import SequentialRecommender
from training.cuda_graph import GraphedTrainStep
from training.data_parallel import DataParallel
from training.dataset import Sequences
from training.instances import training_instances
from training.losses import batch_loss, bce_loss, check_loss, samples_negatives
from training.sampling import NegativeSampler


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 5e-6
    negatives: int = 3  # per instance, as the reference samples them (not per target)
    # training.losses.LOSSES: "bce" is the paper's Eq. (1); "softmax" samples no negatives.
    loss: str = "bce"
    lr_decay: float = 1.0  # the learning rate is multiplied by this after every epoch
    L: int = 5
    T: int = 3
    seed: int = 1
    device: str = "cpu"
    bf16: bool = False  # bfloat16 autocast for the forward pass
    # On CUDA (one process, float32): replay the training step as one captured CUDA graph
    # (training.cuda_graph); ignored elsewhere.
    cuda_graphs: bool = True
    # Fraction of instances whose user is replaced by the generic user 0 each epoch, so that
    # users unseen in training get sequence-based recommendations.
    generic_user_rate: float = 0.0
    progress: bool = True  # a tqdm bar per epoch with loss and instances/s


@dataclass
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean over the epoch's batches, as in the reference
    seconds: float
    instances_per_second: float


def set_seed(seed: int) -> None:
    """Seeds every generator training touches; call it before building the model, too."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(
    model: nn.Module, config: TrainConfig, capturable: bool = False
) -> torch.optim.Optimizer:
    """Adam with L2 weight decay on every parameter, as the reference.

    The fused kernel updates all parameters in one pass: on this 2-core CPU about 3 ms per
    step instead of about 25 ms for the per-tensor loop. ``capturable`` keeps the step count
    and the learning rate on the device, so that a CUDA graph can replay the update and an
    in-place decay of ``group["lr"]`` reaches it.
    """
    fused = torch.device(config.device).type in {"cpu", "cuda"}
    lr = torch.tensor(config.lr, device=config.device) if capturable else config.lr
    return torch.optim.Adam(
        model.parameters(),
        lr=lr,
        weight_decay=config.weight_decay,
        fused=fused,
        capturable=capturable,
    )


def uses_cuda_graphs(config: TrainConfig, processes: int = 1) -> bool:
    """Whether `fit` replays its step as a CUDA graph: asked for, on CUDA, float32, one process."""
    return (
        config.cuda_graphs
        and torch.device(config.device).type == "cuda"
        and not config.bf16
        and processes == 1
    )


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    items: torch.Tensor,
    users: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor | None,
    bf16: bool = False,
    loss_name: str = "bce",
) -> torch.Tensor:
    """One optimisation step on a batch; returns the (detached) loss."""
    loss = batch_loss(model, loss_name, items, users, targets, negatives, bf16)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def training_path(config: TrainConfig, processes: int = 1) -> str:
    """In words, how `fit` runs a step with this config (`cosrec train` prints it)."""
    if uses_cuda_graphs(config, processes):
        return "each step replayed as one CUDA graph, float32"
    precision = "bfloat16 autocast" if config.bf16 else "float32"
    return f"eager steps on {torch.device(config.device).type}, {precision}"


def fit(
    model: SequentialRecommender,
    train: Sequences,
    config: TrainConfig,
    on_epoch_end: Callable[[EpochStats], bool | None] | None = None,
) -> list[EpochStats]:
    """Trains ``model`` in place on ``train``; returns one EpochStats per epoch.

    ``on_epoch_end`` may return True to stop training after that epoch (early stopping,
    pruning, a time budget).

    Under `torch.distributed` with several processes (`torchrun`, `training.distributed`),
    each rank trains on its part of every global batch (`training.data_parallel`); only rank 0
    shows progress and calls ``on_epoch_end``, whose decision every rank follows.
    """
    if not model.trainable:
        raise ValueError(f"{model.name} is not trained by gradient descent (see its fit_counts)")
    if (model.num_users, model.num_items) != (train.num_users, train.num_items):
        raise ValueError(
            f"model is sized for {model.num_users} users and {model.num_items} items, "
            f"data has {train.num_users} and {train.num_items}"
        )
    if not 0.0 <= config.generic_user_rate <= 1.0:
        raise ValueError("generic_user_rate must lie in [0, 1]")
    check_loss(config.loss)
    if samples_negatives(config.loss) and config.negatives < 1:
        raise ValueError(f"the {config.loss} loss needs at least one negative")
    if not 0 < config.lr_decay <= 1:
        raise ValueError("lr_decay must lie in (0, 1]")
    set_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = torch.device(config.device)
    instances = training_instances(train.sequences, config.L, config.T)
    if len(instances) == 0:
        raise ValueError("no training instances: every sequence is empty")
    sampler = NegativeSampler(train.sequences, train.num_items)
    inputs = torch.from_numpy(instances.inputs).to(device)
    targets = torch.from_numpy(instances.targets).to(device)
    model.to(device)
    parallel = DataParallel.of_process_group(model, device, config, train)  # None: one process
    graphed = uses_cuda_graphs(config, 1 if parallel is None else parallel.world_size)
    optimizer = make_optimizer(model, config, capturable=graphed)
    if graphed:
        step = GraphedTrainStep(config.batch_size, train_step)
    else:
        step = train_step if parallel is None else parallel.step
    main = parallel is None or parallel.is_main

    history = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = rng.permutation(len(instances))
        users = instances.users[order]
        negatives = None
        if config.loss == "bce":
            # Sampled in instance order (grouped by user, so the lookups stay local), then
            # shuffled. Few per instance: the whole epoch's at once.
            negatives = sampler.sample(instances.users, config.negatives, rng)[order]
            negatives = torch.from_numpy(negatives).to(device)
        # Many per instance (sampled softmax): drawn batch by batch, so memory stays bounded.
        batch_negatives = samples_negatives(config.loss) and negatives is None
        real_users = users
        if config.generic_user_rate > 0:
            generic = rng.random(len(users)) < config.generic_user_rate
            users = np.where(generic, GENERIC_USER_INDEX, users)
        users = torch.from_numpy(users).to(device)
        order = torch.from_numpy(order).to(device)

        total_loss = torch.zeros((), device=device)
        batches = range(0, len(instances), config.batch_size)
        show = config.progress and main
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not show)
        for batch, start in enumerate(bar):
            rows, stop = order[start : start + config.batch_size], start + config.batch_size
            if batch_negatives:
                sampled = sampler.sample(real_users[start:stop], config.negatives, rng)
                batch_negative = torch.from_numpy(sampled).to(device)
            else:
                batch_negative = None if negatives is None else negatives[start:stop]
            loss = step(
                model,
                optimizer,
                inputs[rows],
                users[start:stop],
                targets[rows],
                batch_negative,
                config.bf16,
                config.loss,
            )
            total_loss += loss
            if show and batch % 20 == 0:  # .item() syncs: only where the bar shows it
                elapsed = time.perf_counter() - started
                done = min(start + config.batch_size, len(instances))
                bar.set_postfix(
                    loss=f"{total_loss.item() / (batch + 1):.4f}", ips=f"{done / elapsed:.0f}"
                )
        bar.close()
        seconds = time.perf_counter() - started
        stats = EpochStats(
            epoch=epoch,
            loss=total_loss.item() / len(batches),
            seconds=seconds,
            instances_per_second=len(instances) / seconds,
        )
        history.append(stats)
        if config.lr_decay != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay
        done = main and on_epoch_end is not None and bool(on_epoch_end(stats))
        if parallel is not None:
            done = parallel.agree(done)
        if done:
            break
    return history


__all__ = [
    "EpochStats",
    "TrainConfig",
    "bce_loss",
    "fit",
    "make_optimizer",
    "set_seed",
    "train_step",
    "training_path",
    "uses_cuda_graphs",
]
