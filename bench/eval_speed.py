"""Time the paper's evaluation of all ML-1M users (scoring + ranking + metrics) on this machine.

    python bench/eval_speed.py [--threads 2] [--repeats 3]

Scores come from a default CosRec (random weights: the time does not depend on them); the
figure is the median wall time of `training.evaluation.evaluate` over all 6,040 users.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from model import build_model  # noqa: E402
from training.evaluation import evaluate  # noqa: E402
from training.scoring import torch_scorer  # noqa: E402
from training.split import read_split  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml-1m" / "split" / "test"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a split dir (train+test)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "eval_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = read_split(args.data)
    model = build_model("cosrec", split.train.num_users, split.train.num_items)
    scorer = torch_scorer(model, "cpu")
    evaluate(scorer, split)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        metrics = evaluate(scorer, split)
        seconds.append(time.perf_counter() - started)
    result = {
        "what": "training.evaluation.evaluate over every ML-1M user, default CosRec scoring",
        "users": metrics["users"],
        "seconds_median": statistics.median(seconds),
        "seconds": seconds,
        "threads": args.threads,
        "machine": f"{torch.backends.cpu.get_cpu_capability()} CPU, torch {torch.__version__}",
        "command": "python bench/eval_speed.py " + " ".join(sys.argv[1:]),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
