"""The training step replayed as a CUDA graph trains the same network as eager steps.

Runs only where CUDA is (a lent GPU machine: `bench/gpu_check.sh` runs it there); CI has no GPU.
Dropout is off so that both runs draw no random numbers after the seed: what is left to differ
is the order of floating-point sums, hence a tolerance rather than equality.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import build_model
from training.fit import TrainConfig, fit, training_path
from training.split import splits_of
from training.synthetic import generate_log

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _train(graphs: bool, loss: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    train = splits_of(generate_log()).test.train
    torch.manual_seed(0)
    model = build_model("cosrec", train.num_users, train.num_items, d=16, dropout=0.0)
    # 3 epochs of a batch size that leaves a short last batch, and a decaying learning rate:
    # the eager short batch and the learning rate the graph reads from the device are covered.
    config = TrainConfig(
        epochs=3,
        batch_size=96,
        lr_decay=0.5,
        loss=loss,
        device="cuda",
        cuda_graphs=graphs,
        progress=False,
    )
    assert ("CUDA graph" in training_path(config)) == graphs
    history = fit(model, train, config)
    return [h.loss for h in history], {k: v.cpu() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_graph_replayed_steps_train_the_same_weights_as_eager_steps(loss: str) -> None:
    eager_losses, eager_weights = _train(graphs=False, loss=loss)
    graph_losses, graph_weights = _train(graphs=True, loss=loss)
    np.testing.assert_allclose(graph_losses, eager_losses, rtol=1e-4)
    for name, weight in eager_weights.items():
        torch.testing.assert_close(graph_weights[name], weight, rtol=1e-3, atol=1e-4, msg=name)
