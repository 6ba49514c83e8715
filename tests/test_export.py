"""The serving bundle: ONNX Runtime agrees with PyTorch, and the manifest follows docs/bundle.md."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from contract.bundle import ONNX_FILES, Manifest, load_bundle
from contract.ids import Vocabulary
from model import build_model
from training.dataset import Sequences
from training.export import export_bundle
from training.fit import TrainConfig, fit
from training.scoring import bundle_scorer

NUM_USERS, NUM_ITEMS, L = 30, 40, 5
SMALL_HYPERPARAMETERS = {
    "cosrec": {"L": L, "d": 8, "block_channels": (8, 16), "fc_dim": 12},
    "cosrec-base": {"L": L, "d": 8, "hidden_dim": 12},
}


def _data() -> Sequences:
    rng = np.random.default_rng(7)
    sequences = tuple(
        rng.integers(1, NUM_ITEMS + 1, size=int(rng.integers(3, 20)), dtype=np.int64)
        for _ in range(NUM_USERS)
    )
    return Sequences(
        users=Vocabulary(tuple(f"user-{k}" for k in range(NUM_USERS))),
        items=Vocabulary(tuple(f"item-{j}" for j in range(NUM_ITEMS))),
        sequences=sequences,
    )


def _trained(name: str, data: Sequences) -> torch.nn.Module:
    """Really trained, so weights and BatchNorm statistics have left their initial values."""
    torch.manual_seed(0)
    model = build_model(name, NUM_USERS, NUM_ITEMS, **SMALL_HYPERPARAMETERS[name])
    fit(model, data, TrainConfig(epochs=3, L=L, generic_user_rate=0.2, progress=False))
    return model


@pytest.fixture(scope="module")
def data() -> Sequences:
    return _data()


@pytest.fixture(scope="module")
def models(data) -> dict[str, torch.nn.Module]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; one thread is also faster for tiny nets
    try:
        return {name: _trained(name, data) for name in SMALL_HYPERPARAMETERS}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(SMALL_HYPERPARAMETERS))
def exported(request, models, data, tmp_path_factory):
    model = models[request.param]
    metrics = {"paper_protocol": {"map": 0.25}}
    bundle = export_bundle(model, data, tmp_path_factory.mktemp("bundle") / "b", metrics)
    return model, data, metrics, bundle


@pytest.mark.parametrize("batch", [1, 64])
def test_onnx_runtime_matches_pytorch(exported, batch):
    model, _, _, bundle = exported
    rng = np.random.default_rng(batch)
    items = rng.integers(0, NUM_ITEMS + 1, size=(batch, L), dtype=np.int64)
    items[0, :2] = 0  # a left-padded history
    users = rng.integers(0, NUM_USERS + 1, size=batch, dtype=np.int64)
    users[0] = 0  # the generic user
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])

    (onnx_scores,) = session.run(["scores"], {"items": items, "users": users})
    model.eval()
    with torch.no_grad():
        torch_scores = model(torch.from_numpy(items), torch.from_numpy(users)).numpy()

    assert onnx_scores.dtype == np.float32
    assert onnx_scores.shape == (batch, NUM_ITEMS)
    assert np.abs(onnx_scores - torch_scores[:, 1:]).max() <= 1e-4


def test_onnx_signature_has_dynamic_batch(exported):
    _, _, _, bundle = exported
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    (output,) = session.get_outputs()
    assert inputs["items"].type == "tensor(int64)"
    assert inputs["users"].type == "tensor(int64)"
    assert inputs["items"].shape[1] == L
    assert isinstance(inputs["items"].shape[0], str)
    assert inputs["items"].shape[0] == inputs["users"].shape[0]
    assert (output.name, output.type, output.shape[1]) == ("scores", "tensor(float)", NUM_ITEMS)


def test_manifest_follows_the_bundle_contract(exported):
    model, data, metrics, bundle = exported
    assert sorted(p.name for p in bundle.iterdir()) == [
        "manifest.json",
        "model.int8.onnx",
        "model.onnx",
    ]
    manifest = json.loads((bundle / "manifest.json").read_text())
    sha256 = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    int8_sha256 = hashlib.sha256((bundle / "model.int8.onnx").read_bytes()).hexdigest()

    assert manifest["format_version"] == 2
    assert manifest["onnx_sha256"] == sha256
    assert manifest["int8_onnx_sha256"] == int8_sha256
    # the identity covers both files: every manifest field but itself, onnx_sha256 included
    content = {key: value for key, value in manifest.items() if key != "model_version"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    assert manifest["model_version"] == f"{model.name}-{digest[:12]}"
    assert manifest["model"] == {
        "name": model.name,
        "hyperparameters": json.loads(json.dumps(model.hyperparameters())),
    }
    assert manifest["sequence_length"] == L
    assert manifest["items"] == list(data.items.ids)
    assert manifest["users"] == list(data.users.ids)
    assert manifest["metrics"] == metrics
    assert manifest["training_data"] == {
        "fingerprint": data.fingerprint(),
        "num_users": NUM_USERS,
        "num_items": NUM_ITEMS,
        "num_interactions": data.num_interactions,
    }
    assert datetime.fromisoformat(manifest["created_at"]).utcoffset().total_seconds() == 0


def test_popularity_ranks_items_by_training_count(exported):
    _, data, _, bundle = exported
    popularity = json.loads((bundle / "manifest.json").read_text())["popularity"]
    counts = np.bincount(np.concatenate(data.sequences), minlength=NUM_ITEMS + 1)
    expected = {data.items.external(i): int(counts[i]) for i in range(1, NUM_ITEMS + 1)}

    assert popularity["counts"] == sorted(popularity["counts"], reverse=True)
    assert dict(zip(popularity["items"], popularity["counts"], strict=True)) == {
        item: count for item, count in expected.items() if count > 0
    }
    assert sum(popularity["counts"]) == data.num_interactions


def test_reexport_replaces_the_bundle_whole(exported, tmp_path: Path):
    model, data, _, bundle = exported
    model.train()
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    (out / "stale.txt").write_text("left by an older bundle")
    export_bundle(model, data, out, {"run": 2})

    assert json.loads((out / "manifest.json").read_text())["metrics"] == {"run": 2}
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "model.int8.onnx",
        "model.onnx",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging dirs left behind
    assert model.training  # the caller's model keeps its mode


@pytest.mark.parametrize("existing", ["a file", "a directory of other things"])
def test_export_refuses_to_replace_what_is_not_a_bundle(models, data, tmp_path: Path, existing):
    model = models["cosrec"]
    out = tmp_path / "out"
    if existing == "a file":
        out.write_text("keep me")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("keep me")

    with pytest.raises(ValueError, match="out"):
        export_bundle(model, data, out)
    assert "keep me" in (out.read_text() if out.is_file() else (out / "notes.txt").read_text())


def test_bundle_scorer_maps_another_index_space_by_id(exported):
    """Scoring through the bundle from data whose ids are ordered differently, with a user
    and an item the bundle has never seen: the unknown item is skipped, as the service skips
    it (contract.ids.input_rows), not turned into padding in place."""
    _, data, _, bundle_dir = exported
    bundle = load_bundle(bundle_dir)
    users = Vocabulary(("new-user", *reversed(data.users.ids)))
    items = Vocabulary((*reversed(data.items.ids), "new-item"))
    score = bundle_scorer(bundle, users, items)

    # data index -> bundle index: user k + 1 <-> NUM_USERS - k + 1 after "new-user" (index 1)
    history = np.array([1, 2, 3, NUM_ITEMS + 1], dtype=np.int64)  # the last one unknown
    scores = score(np.array([1, 2], dtype=np.int64), [history, history]).numpy()
    bundle_history = np.array([[0, 0, NUM_ITEMS, NUM_ITEMS - 1, NUM_ITEMS - 2]] * 2)
    (direct,) = bundle.session.run(
        ["scores"], {"items": bundle_history, "users": np.array([0, NUM_USERS], dtype=np.int64)}
    )
    assert np.isneginf(scores[:, 0]).all()  # padding
    assert np.isneginf(scores[:, NUM_ITEMS + 1]).all()  # the unknown item
    np.testing.assert_array_equal(scores[:, 1 : NUM_ITEMS + 1], direct[:, ::-1])


@pytest.mark.parametrize(
    ("tampered", "untouched"), [("fp32", "int8"), ("int8", "fp32")], ids=["model", "int8"]
)
def test_load_bundle_refuses_a_tampered_graph_and_still_loads_the_other(
    exported, tmp_path: Path, tampered, untouched
):
    _, _, _, bundle = exported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with (copy / ONNX_FILES[tampered]).open("ab") as onnx_file:
        onnx_file.write(b"\0")
    field = "onnx_sha256" if tampered == "fp32" else "int8_onnx_sha256"
    with pytest.raises(ValueError, match=f" {field} "):
        load_bundle(copy, precision=tampered)
    assert load_bundle(copy, precision=untouched).precision == untouched


def test_int8_graph_ranks_as_the_float_graph_does(exported):
    """model.int8.onnx holds the same trained network with int8 weights: its scores stay
    within a tenth of the scores' spread and nearly every top 10 is the float one's."""
    _, _, _, bundle_dir = exported
    float_graph = load_bundle(bundle_dir)
    int8_graph = load_bundle(bundle_dir, precision="int8")
    assert (float_graph.precision, int8_graph.precision) == ("fp32", "int8")
    rng = np.random.default_rng(3)
    items = rng.integers(0, NUM_ITEMS + 1, size=(NUM_USERS, L))
    users = np.arange(NUM_USERS, dtype=np.int64)
    exact, quantized = float_graph.score(items, users), int8_graph.score(items, users)

    spread = exact.max() - exact.min()
    assert np.abs(exact - quantized).max() <= 0.1 * spread
    assert not np.array_equal(exact, quantized)  # it is another graph, not a copy
    overlap = [
        len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10
        for a, b in zip(exact, quantized, strict=True)
    ]
    assert np.mean(overlap) >= 0.9


def test_int8_scores_of_a_row_do_not_depend_on_its_batch(exported):
    """Static quantization: fixed activation scales, so a row scores the same alone as beside
    any other rows (dynamic quantization's per-call scale would move it)."""
    _, _, _, bundle_dir = exported
    int8_graph = load_bundle(bundle_dir, precision="int8")
    rng = np.random.default_rng(4)
    items = rng.integers(0, NUM_ITEMS + 1, size=(16, L))
    users = rng.integers(0, NUM_USERS + 1, size=16)
    items[5] = NUM_ITEMS  # one row unlike the others, to stretch a per-batch range
    together = int8_graph.score(items, users)
    alone = np.concatenate(
        [int8_graph.score(items[k : k + 1], users[k : k + 1]) for k in range(16)]
    )
    # (a per-batch scale moved ML-1M scores by up to 1.0; float kernels may round apart)
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)


def test_int8_of_a_bundle_without_an_int8_graph_is_refused_by_name(exported, tmp_path: Path):
    """A bundle exported before int8 graphs (no int8_onnx_sha256) serves fp32 only."""
    _, _, _, bundle = exported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    fields = json.loads((copy / "manifest.json").read_text())
    del fields["model_version"], fields["int8_onnx_sha256"]
    (copy / "manifest.json").write_text(Manifest.create(**fields).to_json())

    assert load_bundle(copy).precision == "fp32"
    with pytest.raises(ValueError, match=r"names no model\.int8\.onnx"):
        load_bundle(copy, precision="int8")
