"""Turn a validation log and a `bench/ml1m_test_run.py` epochs file into one ml1m.json entry.

For a model whose two runs of the protocol ran apart (a GPU lease too short for both, or the
80% run on another machine): the validation run's log gives the selected epoch (best
validation MAP, the earliest on ties, as `training.pipeline.best_epoch`), the epochs file the
test figures of every epoch. `paper_protocol` is the best measured test epoch;
`validation_selected` the test figures at the selected epoch, when that epoch was measured.
Fewer epochs than planned: the entry says so in `partial`. Then rewrite the table with
`python bench/compare.py --table-only`.

    python bench/merge_test_run.py --model caser --validation-log bench/results/gpu/caser.log \
        --epochs-file bench/results/caser_test_epochs.jsonl --machine "..." --command "..."
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.pipeline import METRIC_KEYS  # noqa: E402

VALIDATION_LINE = re.compile(r"^validation epoch (\d+)/(\d+):.*MAP ([0-9.]+)\s*$")


def validation_maps(log: Path) -> tuple[list[float], int]:
    """MAP per validation epoch (1, 2, ...) and the planned epoch count, from a training log."""
    maps: dict[int, float] = {}
    planned = 0
    for line in log.read_text().splitlines():
        match = VALIDATION_LINE.match(line)
        if match:
            maps[int(match[1])] = float(match[3])
            planned = int(match[2])
    if not maps or sorted(maps) != list(range(1, len(maps) + 1)):
        raise SystemExit(f"{log}: no complete run of 'validation epoch N/M: ... MAP x' lines")
    return [maps[e] for e in sorted(maps)], planned


def figures(record: dict) -> dict:
    return {**{key: record[key] for key in METRIC_KEYS}, "epoch": record["epoch"]}


def entry(validation: list[float], planned: int, epochs: list[dict]) -> dict:
    selected = max(range(len(validation)), key=lambda k: (validation[k], -k)) + 1
    best = max(epochs, key=lambda r: (r["map"], -r["epoch"]))
    at_selected = [r for r in epochs if r["epoch"] == selected]
    result = {
        "paper_protocol": figures(best),
        "validation_selected": figures(at_selected[0]) if at_selected else None,
        "selected_epoch": selected,
        "paper_epoch": best["epoch"],
        "epoch_seconds": sum(r["epoch_seconds"] for r in epochs) / len(epochs),
        "eval_seconds": sum(r["eval_seconds"] for r in epochs) / len(epochs),
        "history": {"validation_map": validation, "test": epochs},
    }
    if len(epochs) < planned:
        result["partial"] = (
            f"The 80% run stopped at test epoch {len(epochs)} of {planned}: paper_protocol is "
            f"the best of {len(epochs)} measured epochs (of {planned}, it can only be higher)."
            + ("" if at_selected else f" Validation chose epoch {selected}: not measured.")
        )
    return result


def replace_runs(previous: dict, fresh: dict) -> dict:
    """The model's entry with `fresh` figures of the two runs; measures of other runs in it
    (e.g. `new_users`) stay, a stale `partial` note does not."""
    replaced = {*fresh, "partial"}
    return {**fresh, **{key: value for key, value in previous.items() if key not in replaced}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--validation-log", type=Path, required=True)
    parser.add_argument("--epochs-file", type=Path, required=True, help="ml1m_test_run.py --out")
    parser.add_argument("--machine", required=True, help="where the runs ran, in words")
    parser.add_argument("--command", required=True, help="the commands of both runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "ml1m.json")
    args = parser.parse_args(argv)
    validation, planned = validation_maps(args.validation_log)
    epochs = [json.loads(line) for line in args.epochs_file.read_text().splitlines() if line]
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    fresh = {
        **entry(validation, planned, epochs),
        "machine": args.machine,
        "command": args.command,
        "device": args.device,
    }
    results[args.model] = replace_runs(results.get(args.model, {}), fresh)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    chosen = results[args.model]
    print(
        f"{args.model}: paper_protocol MAP {chosen['paper_protocol']['map']:.4f} "
        f"(epoch {chosen['paper_epoch']}), validation chose epoch {chosen['selected_epoch']}: "
        + (
            f"MAP {chosen['validation_selected']['map']:.4f}"
            if chosen["validation_selected"]
            else "not measured"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
