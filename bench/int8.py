"""The bundle's int8 graph against its float graph: accuracy on a split, and onnxruntime's time.

    python bench/int8.py [--bundle DIR | --epochs 6] [--data SPLIT_DIR] [--repeats 3]

`--bundle` is a trained bundle; one exported before int8 graphs gets its model.int8.onnx made
here, in a copy, by the exporter's own `write_int8_graph`. Without it, a CosRec is trained on
the split for `--epochs` (defaults, seed 1, as bench/ml1m_test_run.py) and exported first.

Both graphs are evaluated with the paper's protocol (as `cosrec evaluate --bundle ...
--precision`), and their top 10s compared on the split's own histories. Time: onnxruntime
alone, one thread, the two graphs interleaved per batch size, median of 100 calls, `--repeats`
rounds (the ratio is the figure: the machine is shared). Rows go to bench/results/int8.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contract.bundle import (  # noqa: E402
    INT8_ONNX_FILE,
    MANIFEST_FILE,
    ONNX_FILE,
    Manifest,
    load_bundle,
    sha256_hex,
)
from contract.ids import input_rows  # noqa: E402
from cosrec.machine import describe_cpu  # noqa: E402
from model import build_model  # noqa: E402
from training.evaluation import evaluate  # noqa: E402
from training.export import DataSummary, export_bundle  # noqa: E402
from training.fit import TrainConfig, fit, set_seed  # noqa: E402
from training.int8 import write_int8_graph  # noqa: E402
from training.scoring import bundle_scorer  # noqa: E402
from training.split import read_split  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml-1m" / "split" / "test"
BATCHES = (1, 8, 32, 64)


def with_int8_graph(bundle: Path, work: Path) -> Path:
    """`bundle` if it has an int8 graph, else a copy given one (and its manifest entry)."""
    if (bundle / INT8_ONNX_FILE).is_file():
        return bundle
    copy = work / "bundle"
    shutil.copytree(bundle, copy)
    fields = json.loads((copy / MANIFEST_FILE).read_text())
    summary = DataSummary.from_dict(fields)  # the manifest holds what a checkpoint carries
    write_int8_graph(copy / ONNX_FILE, copy / INT8_ONNX_FILE, summary, fields["sequence_length"])
    del fields["model_version"]
    fields["int8_onnx_sha256"] = sha256_hex((copy / INT8_ONNX_FILE).read_bytes())
    (copy / MANIFEST_FILE).write_text(Manifest.create(**fields).to_json())
    return copy


def trained_bundle(split, epochs: int, out: Path) -> Path:
    """A CosRec with the default settings (seed 1) trained `epochs` on the split, exported."""
    config = TrainConfig(epochs=epochs, seed=1, progress=False)
    set_seed(config.seed)
    model = build_model("cosrec", split.train.num_users, split.train.num_items, L=config.L)
    fit(model, split.train, config)
    return export_bundle(model, split.train, out)


def median_us_per_row(bundles: dict, items: np.ndarray, users: np.ndarray) -> dict[str, float]:
    """Per graph and batch size, µs a row (median of 100 calls), the graphs interleaved."""
    times: dict[str, list[float]] = {}
    for batch in BATCHES:
        for _ in range(100):
            for name, bundle in bundles.items():
                started = time.perf_counter()
                bundle.score(items[:batch], users[:batch])
                times.setdefault(f"{name} b{batch}", []).append(time.perf_counter() - started)
    return {
        key: round(float(np.median(values)) * 1e6 / int(key.split(" b")[1]), 1)
        for key, values in times.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a trained bundle (else one is trained)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs without --bundle")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a split (train+test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "int8.json")
    args = parser.parse_args()
    command = " ".join(["python bench/int8.py", *sys.argv[1:]])
    split = read_split(args.data)
    work = Path(tempfile.mkdtemp(prefix="cosrec-int8-"))
    try:
        if args.bundle is None:
            bundle_dir = trained_bundle(split, args.epochs, work / "trained")
        else:
            bundle_dir = with_int8_graph(args.bundle, work)
        bundles = {p: load_bundle(bundle_dir, precision=p) for p in ("fp32", "int8")}
        users_vocab, items_vocab = split.train.users, split.train.items
        metrics = {
            p: evaluate(bundle_scorer(b, users_vocab, items_vocab), split)
            for p, b in bundles.items()
        }
        # the split's own histories, as the service would read them
        rows = input_rows(list(split.train.sequences), bundles["fp32"].sequence_length)
        users = np.arange(1, len(rows) + 1, dtype=np.int64)
        fp32, int8 = (bundles[p].score(rows, users) for p in ("fp32", "int8"))
        overlap = float(
            np.mean(
                [
                    len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10
                    for a, b in zip(fp32, int8, strict=True)
                ]
            )
        )
        # a row's scores alone against the same row scored in a batch of 64
        alone = np.concatenate(
            [bundles["int8"].score(rows[k : k + 1], users[k : k + 1]) for k in range(64)]
        )
        batch_dependence = float(np.abs(alone - int8[:64]).max())
        rounds = [median_us_per_row(bundles, rows[:64], users[:64]) for _ in range(args.repeats)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    speed = {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}
    ratios = {
        f"b{batch}": round(speed[f"int8 b{batch}"] / speed[f"fp32 b{batch}"], 3)
        for batch in BATCHES
    }
    result = {
        "bundle": bundles["fp32"].model_version,
        "trained_here_epochs": args.epochs if args.bundle is None else None,
        "data": str(args.data),
        "metrics": metrics,
        "map_difference": metrics["int8"]["map"] - metrics["fp32"]["map"],
        "top10_overlap_on_training_histories": overlap,
        "int8_max_score_change_alone_vs_in_a_batch_of_64": batch_dependence,
        "us_per_row": speed,
        "int8_time_over_fp32_by_batch": ratios,
        "rounds": args.repeats,
        "machine": describe_cpu(),
        "command": command,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for p in ("fp32", "int8"):
        print(f"{p}: MAP {metrics[p]['map']:.4f}, prec@10 {metrics[p]['prec@10']:.4f}")
    print(f"top-10 overlap {overlap:.3f}; int8 time / fp32 time by batch {ratios}")
    print(f"int8: largest score change between a row alone and in a batch: {batch_dependence}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
