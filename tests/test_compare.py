"""`cosrec compare` through the real dispatcher, and the Table 3 page of bench/compare.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cosrec.cli import main
from training.checkpoint import load_checkpoint
from training.compare import METRIC_LABELS

REPO = Path(__file__).resolve().parents[1]
MODELS = ["poprec", "fmc", "caser"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; one thread is also faster for tiny nets
    try:
        status = main(["compare", "--synthetic", "--models", ",".join(MODELS), "--epochs", "2",
                       "--out", str(out), "--no-progress"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    return out


def test_json_has_both_protocols_timings_and_provenance(compared):
    results = json.loads((compared / "comparison.json").read_text())
    assert list(results) == MODELS
    for name, result in results.items():
        assert result["model"] == name
        for protocol in ("paper_protocol", "validation_selected"):
            figures = result[protocol]
            assert set(METRIC_LABELS) <= set(figures)
            assert all(0.0 <= figures[key] <= 1.0 for key in METRIC_LABELS)
            assert figures["epoch"] == (0 if name == "poprec" else figures["epoch"])
        assert result["eval_seconds"] > 0
        assert result["command"].startswith("cosrec compare --synthetic")
        assert result["machine"]
    assert results["poprec"]["epoch_seconds"] is None  # counted, not trained
    assert results["fmc"]["epoch_seconds"] > 0
    assert 1 <= results["caser"]["validation_selected"]["epoch"] <= 2


def test_markdown_is_table3_shaped_with_the_json_figures(compared):
    results = json.loads((compared / "comparison.json").read_text())
    text = (compared / "comparison.md").read_text()
    assert "| Metric | PopRec | FMC | Caser |" in text
    for key, label in METRIC_LABELS.items():
        row = " | ".join(f"{results[n]['paper_protocol'][key]:.4f}" for n in MODELS)
        assert f"| {label} | {row} |" in text


def test_each_model_is_saved_and_reproduces_its_figures(compared):
    from training.evaluation import evaluate
    from training.scoring import torch_scorer
    from training.split import splits_of
    from training.synthetic import generate_log

    split = splits_of(generate_log()).test
    for name in MODELS:
        report = json.loads((compared / name / "metrics.json").read_text())
        model = load_checkpoint(compared / name / "checkpoint.pt")
        assert model.name == name
        # The kept model is the validation-selected one, so it gives those figures again.
        figures = evaluate(torch_scorer(model), split)
        assert figures["map"] == pytest.approx(report["validation_selected"]["map"], abs=1e-6)
    assert (compared / "caser" / "training.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((compared / "caser" / "metrics.json").read_text())["history"]["test_run"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--models", "nope"], "unknown model(s) nope"),
        (["--epochs", "0"], "must be at least 1"),
        (["--data", "/no/such/split"], "no such file or directory"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, fragment, tmp_path, capsys):
    base = ["compare", "--out", str(tmp_path / "out")]
    if "--data" not in argv:
        base.append("--synthetic")
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


def _bench_module(name: str = "compare"):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_merges_results_and_puts_the_paper_beside_them(compared, tmp_path):
    bench = _bench_module()
    results_path = tmp_path / "ml1m.json"
    results_path.write_text(json.dumps({"cosrec": {"kept": True}}))
    measured = json.loads((compared / "comparison.json").read_text())
    merged = bench.merge_results(results_path, measured)
    assert merged["cosrec"] == {"kept": True}  # another model's object survives the merge
    assert set(MODELS) <= set(json.loads(results_path.read_text()))

    page = bench.table3_markdown(measured)
    assert "| Metric | PopRec ours | paper | FMC ours | paper | Caser ours | paper |" in page
    ours, paper = measured["fmc"]["paper_protocol"]["map"], bench.PAPER_ML1M["fmc"][0]
    assert f"| MAP | {measured['poprec']['paper_protocol']['map']:.4f} | 0.0687 |" in page
    assert f"{100 * (ours / paper - 1):+.1f}%" in page
    assert "Paper ordering: fewer than two of its models measured yet." in page  # Caser only


def test_bench_checks_the_paper_ordering_on_map():
    bench = _bench_module()

    def figures(value: float) -> dict[str, dict[str, float]]:
        return {"paper_protocol": {"map": value}}

    broken = {"caser": figures(0.15), "gru4rec": figures(0.16), "fpmc": figures(0.10)}
    assert "does NOT hold" in bench.ordering_line(broken, "paper_protocol")
    kept = {"caser": figures(0.17), "gru4rec": figures(0.16), "fpmc": figures(0.10)}
    line = bench.ordering_line(kept, "paper_protocol")
    assert "(holds): Caser (0.1700) > GRU4Rec (0.1600) > FPMC (0.1000)" in line


def test_merge_test_run_selects_by_validation_and_marks_a_short_run(tmp_path):
    merge = _bench_module("merge_test_run")
    log = tmp_path / "validation.log"
    log.write_text(
        "".join(
            f"validation epoch {e}/4: loss 0.5 (1.0 s, 10 inst/s), MAP {m}\n"
            for e, m in [(1, 0.10), (2, 0.15), (3, 0.15), (4, 0.12)]
        )
    )
    metrics = dict.fromkeys(METRIC_LABELS, 0.0)
    epochs = [
        {**metrics, "epoch": e, "map": m, "epoch_seconds": 1.0, "eval_seconds": 0.5}
        for e, m in [(1, 0.11), (2, 0.16), (3, 0.17)]
    ]
    validation, planned = merge.validation_maps(log)
    result = merge.entry(validation, planned, epochs)
    assert result["selected_epoch"] == 2  # the earliest of the tied best
    assert result["validation_selected"]["map"] == 0.16
    assert (result["paper_protocol"]["map"], result["paper_epoch"]) == (0.17, 3)
    assert "3 of 4" in result["partial"]
    assert merge.entry(validation, planned, epochs[:1])["validation_selected"] is None
    complete = merge.entry(validation, 3, epochs)
    previous = {**result, "new_users": {"map": 0.2}}
    assert merge.replace_runs(previous, complete) == {**complete, "new_users": {"map": 0.2}}
