"""Table 3 on ML-1M: the paper's baselines through `cosrec compare`, beside the paper's figures.

    .venv/bin/python bench/compare.py [--models poprec,bpr,fmc,fpmc,gru4rec,caser]
        [--epochs 40] [--eval-every 1] [--device cuda] [--bf16] [--work DIR] [--results DIR]
        [--table-only]

(DIR, default runs/compare-ml1m/, ignored by git, keeps compare's checkpoints and histories:
they are derived from MovieLens and must not be committed.)

Trains and evaluates each model on the paper's ML-1M split (shared/data/ml-1m/split), merges
one object per model into bench/results/ml1m.json (the shape of `cosrec`'s object there:
`paper_protocol` and `validation_selected` figures, `epoch_seconds`, `eval_seconds`, `machine`,
`command`), and rewrites bench/results/ml1m_table3.md from every model in ml1m.json, each
figure beside the paper's. `--table-only` only rewrites the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout

from cosrec.commands.compare import compare_main  # noqa: E402
from training.compare import DISPLAY_NAMES, METRIC_LABELS, PAPER_ORDER  # noqa: E402

RESULTS = REPO / "bench" / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml-1m" / "split"
BASELINES = "poprec,bpr,fmc,fpmc,gru4rec,caser"
# Table 3 of the paper, ML-1M: MAP, Prec@1, Prec@5, Prec@10, Recall@1, Recall@5, Recall@10.
PAPER_ML1M = {
    "poprec": (0.0687, 0.1280, 0.1113, 0.1011, 0.0050, 0.0213, 0.0375),
    "bpr": (0.0913, 0.1478, 0.1288, 0.1193, 0.0070, 0.0312, 0.0560),
    "fmc": (0.0949, 0.1748, 0.1505, 0.1317, 0.0104, 0.0432, 0.0722),
    "fpmc": (0.1053, 0.2022, 0.1659, 0.1460, 0.0118, 0.0468, 0.0777),
    "gru4rec": (0.1440, 0.2515, 0.2146, 0.1916, 0.0153, 0.0629, 0.1093),
    "caser": (0.1507, 0.2502, 0.2175, 0.1991, 0.0148, 0.0632, 0.1121),
    "cosrec-base": (0.1743, 0.2892, 0.2521, 0.2256, 0.0186, 0.0771, 0.1331),
    "cosrec": (0.1883, 0.3308, 0.2831, 0.2493, 0.0202, 0.0843, 0.1438),
}
PAPER_ORDERING = ("cosrec", "cosrec-base", "caser", "gru4rec", "fpmc")  # by MAP, best first
MAP_TOLERANCE = 0.10  # the target: within 10% relative MAP of the paper, or better
PROTOCOL_TITLES = {
    "paper_protocol": "Paper protocol (epoch with the best test MAP, as the paper picks it)",
    "validation_selected": "Epoch selected by validation MAP (the honest figure)",
}


def paper_figures(name: str) -> dict[str, float]:
    return dict(zip(METRIC_LABELS, PAPER_ML1M[name], strict=True))


def merge_results(path: Path, new: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """ml1m.json with the objects of `new` added or replaced; other models are kept."""
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(new)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return merged


NOT_MEASURED = "-"


def figures_of(results: dict[str, dict[str, Any]], name: str, protocol: str) -> dict[str, Any]:
    """A model's figures under a protocol; empty where a run was cut short before them."""
    return results.get(name, {}).get(protocol) or {}


def ordering_line(results: dict[str, dict[str, Any]], protocol: str) -> str:
    present = [name for name in PAPER_ORDERING if "map" in figures_of(results, name, protocol)]
    if len(present) < 2:
        return "Paper ordering: fewer than two of its models measured yet."
    maps = [results[name][protocol]["map"] for name in present]
    holds = all(a > b for a, b in itertools.pairwise(maps))
    chain = " > ".join(f"{DISPLAY_NAMES[n]} ({m:.4f})" for n, m in zip(present, maps, strict=True))
    return f"Paper ordering by MAP ({'holds' if holds else 'does NOT hold'}): {chain}."


def protocol_table(results: dict[str, dict[str, Any]], protocol: str) -> str:
    """Metrics down; for each model, ours and the paper's side by side."""
    names = [name for name in PAPER_ORDER if name in results]
    names += [name for name in results if name not in PAPER_ORDER and name in PAPER_ML1M]
    header = "| Metric | " + " | ".join(f"{DISPLAY_NAMES[n]} ours | paper" for n in names) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(names)]
    for key, label in METRIC_LABELS.items():
        cells = []
        for name in names:
            ours = figures_of(results, name, protocol).get(key)
            cells += [NOT_MEASURED if ours is None else f"{ours:.4f}"]
            cells += [f"{paper_figures(name)[key]:.4f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    relative, verdicts = [], []
    for name in names:
        ours = figures_of(results, name, protocol).get("map")
        if ours is None:
            relative, verdicts = [*relative, NOT_MEASURED, ""], [*verdicts, NOT_MEASURED, ""]
            continue
        ratio = ours / paper_figures(name)["map"] - 1
        relative += [f"{100 * ratio:+.1f}%", ""]
        verdicts += ["yes" if ratio >= -MAP_TOLERANCE else "no", ""]
    lines.append("| MAP vs paper | " + " | ".join(relative) + " |")
    lines.append("| within 10% or better | " + " | ".join(verdicts) + " |")
    epochs = [
        cell
        for n in names
        for cell in (str(figures_of(results, n, protocol).get("epoch", NOT_MEASURED)), "")
    ]
    lines.append("| epoch | " + " | ".join(epochs) + " |")
    return "\n".join(lines) + "\n\n" + ordering_line(results, protocol)


def table3_markdown(results: dict[str, dict[str, Any]]) -> str:
    known = {name: r for name, r in results.items() if name in PAPER_ML1M}
    sections = [
        "# ML-1M: Table 3 of the paper beside our figures",
        "",
        "Written by `bench/compare.py` from `bench/results/ml1m.json`; each model's command and",
        "machine are in that file. Paper figures: Yan et al., CIKM 2019, Table 3.",
        "",
    ]
    for protocol, title in PROTOCOL_TITLES.items():
        sections += [f"## {title}", "", protocol_table(known, protocol), ""]
    timings = [
        f"| {DISPLAY_NAMES[n]} | "
        + (f"{r['epoch_seconds']:.1f}" if r.get("epoch_seconds") is not None else "-")
        + (f" | {r['eval_seconds']:.1f}" if r.get("eval_seconds") is not None else " | -")
        + f" | {r['machine']} |"
        for n, r in sorted(known.items(), key=lambda item: PAPER_ORDER.index(item[0]))
    ]
    partial = [f"- {DISPLAY_NAMES[n]}: {r['partial']}" for n, r in known.items() if "partial" in r]
    if partial:
        sections += ["## Runs cut short", "", *partial, ""]
    sections += [
        "## Timings",
        "",
        "| Model | seconds per epoch | seconds per evaluation | machine |",
        "|---|---:|---:|---|",
        *timings,
        "",
    ]
    return "\n".join(sections)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=BASELINES, help=f"default: {BASELINES}")
    parser.add_argument("--epochs", default="40")
    parser.add_argument("--eval-every", default="1")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--work", type=Path, default=REPO / "runs" / "compare-ml1m", help="compare's OUT"
    )
    parser.add_argument("--table-only", action="store_true", help="only rewrite the table")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where ml1m.json lives")
    args = parser.parse_args(argv)
    results_path = args.results / "ml1m.json"
    if not args.table_only:
        status = compare_main(
            ["--data", str(args.data), "--models", args.models, "--epochs", args.epochs,
             "--eval-every", args.eval_every, "--device", args.device, "--out", str(args.work),
             "--no-progress", *(["--bf16"] if args.bf16 else [])]
        )  # fmt: skip
        if status:
            return status
        command = shlex.join([".venv/bin/python", "bench/compare.py", *argv])
        measured = {}
        for name in json.loads((args.work / "comparison.json").read_text()):
            # MODEL/metrics.json: the comparison's object plus the per-epoch history, as
            # bench/ml1m.py keeps it for cosrec.
            measured[name] = json.loads((args.work / name / "metrics.json").read_text())
            measured[name]["command"] = command  # what reproduces the figure: this script
        merge_results(results_path, measured)
    if not results_path.exists():
        print(f"bench/compare.py: error: no {results_path} to tabulate", file=sys.stderr)
        return 2
    table = args.results / "ml1m_table3.md"
    table.write_text(table3_markdown(json.loads(results_path.read_text())))
    print(f"wrote {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
