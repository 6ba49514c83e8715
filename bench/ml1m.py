"""The paper's ML-1M experiment (Table 3) for CosRec and CosRec-base, and the new-user measure.

For each model: `training.pipeline.run_pipeline` on the ML-1M split (epoch count chosen by
validation MAP, then the test figures at that epoch = `validation_selected`; the best test
epoch = `paper_protocol`, the paper's protocol). Then, for CosRec, users held out of training
entirely are scored through the generic user and through popularity, with and without
generic-user training. Writes `ml1m.json` and `ml1m.md` into `--results`.

    python bench/ml1m.py --device cuda                    # the real 40-epoch job
    python bench/ml1m.py --epochs 1 --max-users 300 --results /tmp/ml1m-smoke   # a smoke test
    python bench/ml1m.py --new-users-only --epochs 8     # the new-user measure alone
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from cosrec.machine import describe_device  # noqa: E402
from training.compare import train_and_measure  # noqa: E402
from training.fit import TrainConfig  # noqa: E402
from training.new_users import new_user_experiment, users_subset  # noqa: E402
from training.pipeline import METRIC_KEYS  # noqa: E402
from training.split import Splits, load_splits  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml-1m" / "split"
MODELS = ("cosrec", "cosrec-base")
GENERIC_USER_RATES = (0.0, 0.1)
# Yan et al., CIKM 2019, Table 3, MovieLens-1M.
PAPER = {
    "cosrec": (0.1883, 0.3308, 0.2831, 0.2493, 0.0202, 0.0843, 0.1438),
    "cosrec-base": (0.1743, 0.2892, 0.2521, 0.2256, 0.0186, 0.0771, 0.1331),
}


def first_users(splits: Splits, count: int) -> Splits:
    """The first `count` users of both splits (a quick run; the item vocabulary stays)."""
    keep = np.arange(min(count, splits.test.train.num_users))
    return Splits(users_subset(splits.validation, keep), users_subset(splits.test, keep))


def new_user_runs(splits: Splits, config: TrainConfig) -> list[dict[str, Any]]:
    """CosRec trained without 10% of the users, once per generic-user rate (see
    training.new_users), for `config.epochs` epochs."""
    return [
        new_user_experiment(
            splits.test, "cosrec", {}, replace(config, generic_user_rate=rate, progress=False)
        )
        for rate in GENERIC_USER_RATES
    ]


def markdown(results: dict[str, Any]) -> str:
    header = "| model | figures | epoch | " + " | ".join(METRIC_KEYS) + " |"
    lines = [
        "# ML-1M (paper Table 3 protocol)",
        "",
        "`paper_protocol`: the best epoch as measured on test (the paper's protocol);",
        "`validation_selected`: the epoch chosen by validation MAP, measured on test.",
        "",
        header,
        "|" + "---|" * (len(METRIC_KEYS) + 3),
    ]
    for name in MODELS:
        if name not in results:
            continue
        entry = results[name]
        rows = [("paper (Table 3)", dict(zip(METRIC_KEYS, PAPER[name], strict=True)), "")]
        rows += [
            (k, entry[k], entry[k]["epoch"]) for k in ("paper_protocol", "validation_selected")
        ]
        for label, figures, epoch in rows:
            values = " | ".join(f"{figures[k]:.4f}" for k in METRIC_KEYS)
            lines.append(f"| {name} | {label} | {epoch} | {values} |")
    lines += [
        "",
        "| model | s / training epoch | s / evaluation (all users) | machine |",
        "|---|---|---|---|",
    ]
    for name in MODELS:
        if name in results:
            entry = results[name]
            lines.append(
                f"| {name} | {entry['epoch_seconds']:.1f} | {entry['eval_seconds']:.2f}"
                f" | {entry['machine']} |"
            )
    new_users = results.get("cosrec", {}).get("new_users")
    if new_users:
        lines += [
            "",
            f"## Users unseen in training (CosRec, {new_users[0]['held_out_fraction']:.0%} of users"
            " held out)",
            "",
            "| generic_user_rate | epochs | known users MAP | held-out MAP (generic user)"
            " | held-out MAP (popularity) |",
            "|---|---|---|---|---|",
        ]
        for run in new_users:
            lines.append(
                f"| {run['generic_user_rate']} | {run['epochs']} | {run['known_users']['map']:.4f}"
                f" | {run['held_out_generic_user']['map']:.4f}"
                f" | {run['held_out_popularity']['map']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def save(results: dict[str, Any], directory: Path) -> None:
    (directory / "ml1m.json").write_text(json.dumps(results, indent=2) + "\n")
    (directory / "ml1m.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the ML-1M split dir")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--generic-user-rate",
        type=float,
        default=0.0,
        help="for the Table 3 runs; 0 as in the paper",
    )
    parser.add_argument("--max-users", type=int, help="only the first N users (smoke tests)")
    parser.add_argument("--skip-new-users", action="store_true")
    parser.add_argument(
        "--new-users-only",
        action="store_true",
        help="only the new-user experiment, --epochs epochs per run, into the cosrec entry",
    )
    parser.add_argument("--no-progress", action="store_true", help="no per-epoch progress bars")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if not (args.data / "test").is_dir():
        parser.error(f"{args.data}: not an ML-1M split directory (no test/)")

    splits = load_splits(args.data)
    if args.max_users:
        splits = first_users(splits, args.max_users)
    config = TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        bf16=args.bf16,
        generic_user_rate=args.generic_user_rate,
        progress=not args.no_progress,
    )
    command = shlex.join(["python", "bench/ml1m.py", *(sys.argv[1:] if argv is None else argv)])

    args.results.mkdir(parents=True, exist_ok=True)
    json_path = args.results / "ml1m.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    machine = describe_device(args.device)
    if args.new_users_only:
        entry = results.setdefault("cosrec", {})
        entry["new_users"] = [
            {**run, "machine": machine, "command": command} for run in new_user_runs(splits, config)
        ]
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(entry["new_users"], indent=2))
        return 0
    for name in args.models:
        started = time.perf_counter()
        _, entry = train_and_measure(splits, name, config, args.eval_every, print)
        entry.update(
            machine=machine,
            command=command,
            device=args.device,
            bf16=args.bf16,
            max_users=args.max_users,
            wall_seconds=time.perf_counter() - started,
        )
        results[name] = entry
        save(results, args.results)  # keep the Table 3 figures if the next part is cut short
        if name == "cosrec" and not args.skip_new_users:
            entry["new_users"] = new_user_runs(
                splits, replace(config, epochs=entry["selected_epoch"])
            )
            save(results, args.results)
        figures = {k: entry[k] for k in ("paper_protocol", "validation_selected")}
        print(f"{name}: {json.dumps(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
