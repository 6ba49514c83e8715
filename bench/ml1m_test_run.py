"""The 80% training run of the ML-1M protocol alone, measuring test metrics after every epoch.

`bench/ml1m.py` runs the whole protocol (validation run, then this run). This script is the
second half by itself, for a GPU lease too short for both: it trains exactly as the pipeline's
test run does (same seed, config and model) and appends each epoch's full test metrics to a
JSON-lines file as it goes, so a run cut short by a time limit keeps every finished epoch.

    python bench/ml1m_test_run.py --data SPLIT_DIR --device cuda --out epochs.jsonl [--seconds 230]
                                  [--no-cuda-graphs] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import build_model  # noqa: E402
from training.evaluation import evaluate  # noqa: E402
from training.fit import EpochStats, TrainConfig, fit, set_seed, training_path  # noqa: E402
from training.scoring import torch_scorer  # noqa: E402
from training.split import read_split  # noqa: E402


class TimeBudgetSpentError(Exception):
    """Raised from the epoch callback once the time budget is spent."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="split dir with test/")
    parser.add_argument("--model", default="cosrec")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=float("inf"), help="time budget")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per epoch")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="eager steps on CUDA")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training")
    args = parser.parse_args()

    started = time.perf_counter()
    split = read_split(args.data / "test")
    config = TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        cuda_graphs=not args.no_cuda_graphs,
        bf16=args.bf16,
        progress=False,
    )
    set_seed(config.seed)  # as training.pipeline does: the initial weights are seeded too
    model = build_model(args.model, split.train.num_users, split.train.num_items, L=config.L)
    scorer = torch_scorer(model, config.device)

    def on_epoch_end(stats: EpochStats) -> None:
        eval_started = time.perf_counter()
        metrics = evaluate(scorer, split)
        record = {
            "epoch": stats.epoch,
            "loss": stats.loss,
            "epoch_seconds": stats.seconds,
            "eval_seconds": time.perf_counter() - eval_started,
            "training": training_path(config),
            **metrics,
        }
        with args.out.open("a") as out:
            out.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        if time.perf_counter() - started > args.seconds:
            raise TimeBudgetSpentError

    try:
        fit(model, split.train, config, on_epoch_end)
    except TimeBudgetSpentError:
        print("time budget spent; stopped after the last recorded epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
