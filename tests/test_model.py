"""The networks: pairwise encoding, shapes, the fast path against the literal one."""

from __future__ import annotations

import pytest
import torch

from model import MODELS, CosRec, CosRecBase, build_model
from model.grid import WinogradF3x3, conv_cells_first
from model.pairwise import pairwise_linear, pairwise_tensor

NUM_USERS, NUM_ITEMS = 7, 30
OURS = [CosRec.name, CosRecBase.name]  # the baselines (issue 6) test themselves


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def random_batch(batch: int, L: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    items = torch.randint(0, NUM_ITEMS + 1, (batch, L))
    users = torch.randint(0, NUM_USERS + 1, (batch,))
    return items, users


def test_pairwise_tensor_cell_i_j_holds_e_i_then_e_j():
    embeddings = torch.randn(3, 5, 4)
    pairs = pairwise_tensor(embeddings)
    assert pairs.shape == (3, 8, 5, 5)
    for i in range(5):
        for j in range(5):
            expected = torch.cat([embeddings[:, i], embeddings[:, j]], dim=1)
            assert torch.equal(pairs[:, :, i, j], expected)


def test_pairwise_linear_equals_a_1x1_convolution_of_the_pairwise_tensor():
    embeddings = torch.randn(6, 5, 8, dtype=torch.float64)
    conv = torch.nn.Conv2d(16, 12, kernel_size=1, dtype=torch.float64)
    literal = conv(pairwise_tensor(embeddings)).permute(0, 2, 3, 1)  # [B, L, L, C]
    factorised = pairwise_linear(embeddings, conv.weight.flatten(1), conv.bias)
    torch.testing.assert_close(factorised, literal, rtol=0, atol=1e-12)
    cells_first = pairwise_linear(
        embeddings.transpose(0, 1), conv.weight.flatten(1), conv.bias, cells_first=True
    )
    torch.testing.assert_close(cells_first, literal.permute(1, 2, 0, 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("grid", "kernel", "padding"),
    [(5, 3, 0), (3, 3, 0), (7, 3, 0), (2, 3, 1), (5, 1, 0), (5, 5, 0)],
)
def test_grid_convolution_equals_conv2d(grid: int, kernel: int, padding: int):
    """Winograd (5x5, 3x3), whole-grid patch, im2col and 1x1 paths against nn.Conv2d."""
    conv = torch.nn.Conv2d(6, 4, kernel_size=kernel, padding=padding, dtype=torch.float64)
    x = torch.randn(3, 6, grid, grid, dtype=torch.float64, requires_grad=True)
    expected = conv(x)
    cells_first = x.permute(2, 3, 0, 1)  # [H, W, B, C]
    out = conv_cells_first(cells_first, conv, WinogradF3x3().double()).permute(2, 3, 0, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    gradient = torch.randn_like(expected)
    grads = torch.autograd.grad(out, (x, conv.weight), gradient)
    expected_grads = torch.autograd.grad(expected, (x, conv.weight), gradient)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("batch", [1, 17])
def test_output_shapes(name: str, batch: int):
    model = build_model(name, NUM_USERS, NUM_ITEMS).eval()
    items, users = random_batch(batch)
    assert model(items, users).shape == (batch, NUM_ITEMS + 1)
    targets = torch.randint(1, NUM_ITEMS + 1, (batch, 6))
    assert model(items, users, targets).shape == (batch, 6)


@pytest.mark.parametrize("name", OURS)
def test_target_scores_are_the_gathered_columns_of_the_full_scores(name: str):
    model = build_model(name, NUM_USERS, NUM_ITEMS).eval()
    items, users = random_batch(9)
    targets = torch.randint(1, NUM_ITEMS + 1, (9, 4))
    full = model(items, users)
    torch.testing.assert_close(model(items, users, targets), full.gather(1, targets))


def literal_and_fast(model: torch.nn.Module, items, users, targets):
    """Scores and parameter gradients of both code paths, from the same weights and state."""
    results = []
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    for fast in (False, True):
        model.load_state_dict(start_state)
        model.fast = fast
        model.zero_grad()
        scores = model(items, users, targets)
        scores.square().sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(
            (scores.detach(), grads, {k: v.clone() for k, v in model.state_dict().items()})
        )
    return results


@pytest.mark.parametrize(
    ("name", "hyperparameters"),
    [
        ("cosrec", {}),
        ("cosrec", {"L": 3, "block_channels": [16, 8, 4]}),
        ("cosrec", {"L": 8, "d": 10}),
        ("cosrec-base", {}),
    ],
)
def test_fast_path_equals_the_literal_network_in_values_gradients_and_batchnorm_state(
    name: str, hyperparameters: dict
):
    model = build_model(name, NUM_USERS, NUM_ITEMS, dropout=0.0, **hyperparameters).double()
    items, users = random_batch(12, model.L)
    targets = torch.randint(1, NUM_ITEMS + 1, (12, 6))
    for mode in (True, False):  # training (batch statistics) and eval (running statistics)
        model.train(mode)
        (slow, slow_grads, slow_state), (fast, fast_grads, fast_state) = literal_and_fast(
            model, items, users, targets
        )
        torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)
        assert fast_grads.keys() == slow_grads.keys()
        for key in slow_grads:
            torch.testing.assert_close(fast_grads[key], slow_grads[key], rtol=1e-9, atol=1e-9)
        for key in slow_state:
            torch.testing.assert_close(fast_state[key], slow_state[key], rtol=1e-9, atol=1e-9)


def test_fast_path_matches_the_literal_network_in_float32_to_1e_5():
    model = build_model("cosrec", NUM_USERS, NUM_ITEMS).eval()
    items, users = random_batch(64)
    fast = model(items, users)
    model.fast = False
    torch.testing.assert_close(fast, model(items, users), rtol=0, atol=1e-5)


def test_table_1_network_and_the_whole_grid_first_kernel_variant():
    table_1 = CosRec(NUM_USERS, NUM_ITEMS)
    assert [block.conv1.kernel_size for block in table_1.blocks] == [(1, 1), (1, 1)]
    assert [block.conv2.padding for block in table_1.blocks] == [(0, 0), (0, 0)]  # 5 -> 3 -> 1
    assert [block.conv2.out_channels for block in table_1.blocks] == [128, 256]
    assert table_1.fc.out_features == 150
    wide = CosRec(NUM_USERS, NUM_ITEMS, first_kernel=5)
    assert wide.blocks[0].conv1.kernel_size == (5, 5)  # one weight per item pair (Figure 3)
    items, users = random_batch(4)
    assert wide.eval()(items, users).shape == (4, NUM_ITEMS + 1)
    with pytest.raises(ValueError, match="first_kernel"):
        CosRec(NUM_USERS, NUM_ITEMS, first_kernel=6)


def test_state_dict_is_the_literal_networks():
    """The fast path's helpers add no state: checkpoints hold exactly Table 1's tensors."""
    names = set(CosRec(NUM_USERS, NUM_ITEMS).state_dict())
    assert not any("winograd" in name for name in names)
    assert {n.split(".", 2)[2] for n in names if n.startswith("blocks.0.")} == {
        f"{layer}.{tensor}"
        for layer, tensors in {
            "conv1": ("weight", "bias"),
            "conv2": ("weight", "bias"),
            "bn1": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
            "bn2": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
        }.items()
        for tensor in tensors
    }


def test_initialisation_follows_the_reference():
    model = CosRecBase(NUM_USERS, 3000, d=50)
    assert model.item_embeddings.weight.shape == (3001, 50)
    assert model.user_embeddings.weight.shape == (NUM_USERS + 1, 50)
    assert abs(model.item_embeddings.weight.std().item() - 1 / 50) < 2e-3
    assert abs(model.output.weight.weight.std().item() - 1 / 150) < 1e-3
    assert torch.count_nonzero(model.output.bias.weight) == 0


@pytest.mark.parametrize("name", OURS)
def test_hyperparameters_rebuild_the_same_architecture(name: str):
    model = build_model(name, NUM_USERS, NUM_ITEMS, d=12, dropout=0.25)
    assert model.name == name
    rebuilt = build_model(name, NUM_USERS, NUM_ITEMS, **model.hyperparameters())
    rebuilt.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    assert rebuilt.hyperparameters() == model.hyperparameters()


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("no-such-model", NUM_USERS, NUM_ITEMS)


def test_both_networks_are_registered_under_their_names():
    assert MODELS[CosRec.name] is CosRec
    assert MODELS[CosRecBase.name] is CosRecBase
