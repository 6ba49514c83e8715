"""`cosrec split | train | evaluate | export`, run in-process through the real dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cosrec.cli import main
from training.synthetic import generate_log, write_log_csv

SMALL = ["--d", "8", "--block-channels", "8,16", "--fc-dim", "16", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A CSV log split by `cosrec split`, then `cosrec train` on the split directory."""
    root = tmp_path_factory.mktemp("cli")
    log = root / "log.csv"
    write_log_csv(generate_log(num_users=80, num_items=40, length_range=(12, 30), seed=3), log)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        split_status = main(
            ["split", "--data", str(log), "--format", "csv", "--out", str(root / "split")]
        )
        train_status = main(
            [
                "train",
                "--data",
                str(root / "split"),
                "--out",
                str(root / "bundle"),
                "--epochs",
                "2",
                *SMALL,
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert (split_status, train_status) == (0, 0)
    return {"log": log, "split": root / "split", "bundle": root / "bundle"}


def test_split_writes_the_paper_layout(trained):
    for part in ("test", "validation"):
        for name in ("train.txt", "test.txt"):
            lines = (trained["split"] / part / name).read_text().splitlines()
            assert lines
            assert all(line.split()[2] == "1" for line in lines)


def test_train_writes_bundle_checkpoint_metrics_and_plot(trained):
    bundle = trained["bundle"]
    names = {p.name for p in bundle.iterdir()}
    assert {"model.onnx", "manifest.json", "checkpoint.pt", "metrics.json", "training.png"} <= names
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / "metrics.json").read_text())

    assert manifest["metrics"]["validation_selected"] == {
        k: report["validation_selected"][k] for k in manifest["metrics"]["validation_selected"]
    }
    assert set(report) >= {"paper_protocol", "validation_selected", "history", "epoch_seconds"}
    assert len(report["history"]["validation_run"]) == len(report["history"]["test_run"]) == 2
    # the paper's protocol picks its epoch on test, so it can only be at least as high
    assert report["paper_protocol"]["map"] >= report["validation_selected"]["map"]
    assert (bundle / "training.png").read_bytes().startswith(b"\x89PNG")

    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    items = np.array([[0, 0, 1, 2, 3]], dtype=np.int64)
    (scores,) = session.run(["scores"], {"items": items, "users": np.array([0], dtype=np.int64)})
    assert scores.shape == (1, len(manifest["items"]))
    assert np.isfinite(scores).all()


def test_evaluate_checkpoint_and_bundle_reproduce_the_training_figures(trained, capsys):
    bundle = trained["bundle"]
    expected = json.loads((bundle / "metrics.json").read_text())["validation_selected"]
    capsys.readouterr()

    for source in (["--checkpoint", str(bundle / "checkpoint.pt")], ["--bundle", str(bundle)]):
        assert main(["evaluate", "--split", str(trained["split"]), *source]) == 0
        metrics = json.loads(capsys.readouterr().out)
        for key in ("map", "prec@1", "prec@5", "prec@10", "recall@1", "recall@5", "recall@10"):
            assert metrics[key] == pytest.approx(expected[key], abs=1e-6), (source[0], key)


def test_evaluate_with_the_int8_graph_gives_figures_near_the_float_ones(trained, capsys):
    bundle, split = str(trained["bundle"]), str(trained["split"])
    capsys.readouterr()
    figures = {}
    for precision in ("fp32", "int8"):
        assert (
            main(["evaluate", "--split", split, "--bundle", bundle, "--precision", precision]) == 0
        )
        figures[precision] = json.loads(capsys.readouterr().out)
    assert figures["int8"].keys() == figures["fp32"].keys()
    assert figures["int8"]["map"] == pytest.approx(figures["fp32"]["map"], abs=0.05)


def test_export_rebuilds_the_same_bundle_from_the_checkpoint(trained, tmp_path):
    bundle = trained["bundle"]
    out = tmp_path / "exported"
    status = main(
        [
            "export",
            "--checkpoint",
            str(bundle / "checkpoint.pt"),
            "--out",
            str(out),
        ]
    )
    assert status == 0
    original = json.loads((bundle / "manifest.json").read_text())
    rebuilt = json.loads((out / "manifest.json").read_text())
    for key in ("items", "users", "popularity", "training_data", "sequence_length", "model"):
        assert rebuilt[key] == original[key]

    rng = np.random.default_rng(0)
    feed = {
        "items": rng.integers(0, len(original["items"]) + 1, size=(16, 5), dtype=np.int64),
        "users": rng.integers(0, len(original["users"]) + 1, size=16, dtype=np.int64),
    }
    scores = [
        ort.InferenceSession(str(b / "model.onnx"), providers=["CPUExecutionProvider"]).run(
            ["scores"], feed
        )[0]
        for b in (bundle, out)
    ]
    assert np.abs(scores[0] - scores[1]).max() <= 1e-5


def test_train_synthetic_end_to_end(tmp_path):
    out = tmp_path / "bundle"
    assert main(["train", "--synthetic", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 2
    assert manifest["sequence_length"] == 5
    assert manifest["metrics"]["validation_selected"]["epoch"] in (1, 2)
    ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])


def _bad_data(tmp_path: Path) -> Path:
    path = tmp_path / "bad.txt"
    path.write_text("1 10 1\n1 11 1\n1\n")
    return path


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--synthetic", "--out", "X", "--epochs", "0"], "--epochs"),
        (["train", "--synthetic", "--out", "X", "--bogus"], "--bogus"),
        (["train", "--out", "X"], "--data"),
        (
            ["train", "--synthetic", "--out", "X", "--model", "cosrec", "--hidden-dim", "4"],
            "--hidden-dim",
        ),
        (["train", "--data", "{missing}", "--out", "X"], "missing"),
        (["train", "--data", "{bad}", "--format", "caser", "--out", "X"], "bad.txt:3"),
        (["split", "--data", "{bad}", "--format", "caser", "--out", "X"], "bad.txt:3"),
        (["split", "--data", "{bad}", "--format", "xml", "--out", "X"], "--format"),
        (["split", "--data", "{bad}", "--format", "parquet", "--out", "X"], "as Parquet"),
        (["evaluate", "--split", "{missing}", "--bundle", "B"], "missing"),
        (["evaluate", "--split", "{tmp}", "--checkpoint", "{bad}"], "train"),
        (["export", "--checkpoint", "{bad}", "--out", "X"], "bad.txt"),
        (["evaluate", "--split", "{tmp}"], "--checkpoint"),
        (["train", "--synthetic", "--out", "{bad}"], "not a directory"),
    ],
)
def test_bad_arguments_or_data_give_one_line_and_status_2(argv, fragment, tmp_path, capsys):
    places = {
        "missing": str(tmp_path / "missing"),
        "bad": str(_bad_data(tmp_path)),
        "tmp": str(tmp_path),
    }
    argv = [arg.format(**places) for arg in argv]
    capsys.readouterr()

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"cosrec {argv[0]}: error: ")
    assert fragment in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(tmp_path, capsys):
    assert main(["train", "--synthetic", "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err
