"""The training step captured as one CUDA graph: forward, backward and Adam replayed per batch.

At batch 512 an ML-1M step is a few hundred small kernels, and on a GPU the time goes to
launching them, not to running them; a captured graph launches them all at once. What is
captured is the eager step itself (`training.fit.train_step`, given to the constructor), so
accuracy is unchanged; what differs is only how the kernels reach the GPU.

Constraints of a graph, handled here: shapes are fixed (the epoch's last, shorter batch runs
eagerly), inputs must live at fixed addresses (each batch is copied into static buffers), the
optimiser must keep its step count and learning rate on the device (`capturable`, a tensor
`lr`, see `training.fit.make_optimizer`), and the first steps run eagerly on a side stream so
that cuBLAS and autograd allocate their workspaces before the capture.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

EAGER_WARMUP_STEPS = 3  # real training steps run eagerly before the capture

# train_step's signature: model, optimizer, items, users, targets, negatives, bf16, loss name
Step = Callable[..., torch.Tensor]


class GraphedTrainStep:
    """A drop-in for `eager_step` that replays a captured graph of it for full-size batches."""

    def __init__(self, batch_size: int, eager_step: Step) -> None:
        self.batch_size = batch_size
        self.eager_step = eager_step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: list[torch.Tensor | None] = []
        self.static_loss: torch.Tensor | None = None
        self.eager_steps = 0
        self.side_stream = torch.cuda.Stream()

    def __call__(
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
        if bf16:
            raise ValueError("CUDA graphs train in float32 only (bf16 autocast caches casts)")
        batch = (items, users, targets, negatives)
        if items.shape[0] != self.batch_size or self.eager_steps < EAGER_WARMUP_STEPS:
            return self._eager(model, optimizer, batch, loss_name)
        if self.graph is None:
            self._capture(model, optimizer, batch, loss_name)
        for static, tensor in zip(self.static_inputs, batch, strict=True):
            if static is not None and tensor is not None:
                static.copy_(tensor)
        assert self.graph is not None
        assert self.static_loss is not None
        self.graph.replay()
        # The graph overwrites static_loss on its next replay; callers add it up in stream
        # order before that, so no copy is needed.
        return self.static_loss

    def _eager(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch: tuple[torch.Tensor | None, ...],
        loss_name: str,
    ) -> torch.Tensor:
        # Before the capture the warm-up must run on a side stream (the capture's own rule);
        # the short batch after it may run on either, the side stream keeps one path.
        self.side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side_stream):
            loss = self.eager_step(model, optimizer, *batch, False, loss_name)
        torch.cuda.current_stream().wait_stream(self.side_stream)
        self.eager_steps += 1
        return loss

    def _capture(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch: tuple[torch.Tensor | None, ...],
        loss_name: str,
    ) -> None:
        self.static_inputs = [None if t is None else t.clone() for t in batch]
        # Gradients set to None so that the captured backward allocates them in the graph's
        # own memory pool and each replay writes (not adds) them.
        optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_loss = self.eager_step(
                model, optimizer, *self.static_inputs, False, loss_name
            )
        self.graph = graph


__all__ = ["EAGER_WARMUP_STEPS", "GraphedTrainStep"]
