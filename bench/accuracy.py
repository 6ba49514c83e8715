"""Accuracy beyond the paper, honestly: every model of Table 3 tuned under the same budget.

For one data set: each family of `model.MODELS` is searched by `training.tune` on the
validation split only (same trials, same time cap, same per-trial epoch cap for all), its best
settings retrained once on the 80% split and measured on test (`validation_selected`, with the
best test epoch beside it as `paper_protocol`). The `auto` entry is the family
`training.tune.choose_family` picks from those searches by validation MAP: the function
`cosrec train --model auto` calls, on the same seeded searches. Then the new-user measure
(`training.new_users`) for the auto pick. Writes `<name>.json` and `<name>.md` into --results,
after every family (so a long run can be resumed with --resume).

    nice -n 19 python bench/accuracy.py --dataset amazon-beauty --trials 8 --time-budget 180
    nice -n 19 python bench/accuracy.py --dataset foursquare-nyc --trials 8 --time-budget 180
    python bench/accuracy.py --dataset ml1m --device cuda --trials 12 --time-budget 900
    python bench/accuracy.py --dataset ml1m --models cosrec --trials 1 ...   # the reference only
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from cosrec.machine import describe_device  # noqa: E402
from model import MODELS  # noqa: E402
from training.compare import DISPLAY_NAMES, paper_ordered_models  # noqa: E402
from training.fit import TrainConfig  # noqa: E402
from training.new_users import new_user_experiment  # noqa: E402
from training.search_space import is_trained  # noqa: E402
from training.split import load_splits  # noqa: E402
from training.tune import Budget, choose_family, report, retrain, search  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
# name -> (data, format, results file stem); ml1m's stem keeps the paper reproduction's
# ml1m.json as it is.
DATASETS = {
    "ml1m": (SHARED / "ml-1m" / "split", "caser", "ml1m-tuned"),
    "foursquare-nyc": (
        SHARED / "foursquare-nyc" / "NYC_checkins_time_ordered.txt.gz",
        "caser",
        "foursquare-nyc",
    ),
    "amazon-beauty": (SHARED / "amazon-beauty" / "Beauty.txt.gz", "sequences", "amazon-beauty"),
}
TITLES = {
    "ml1m": "MovieLens-1M",
    "foursquare-nyc": "Foursquare NYC check-ins",
    "amazon-beauty": "Amazon Beauty",
}
META = "about"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--data", type=Path, help="override the data set's path")
    parser.add_argument("--models", default="all", help="all, or e.g. cosrec,caser")
    parser.add_argument("--trials", type=int, default=8, help="per family")
    parser.add_argument("--time-budget", type=float, default=180.0, help="seconds per family")
    parser.add_argument("--max-epochs", type=int, default=30, help="per trial")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-new-users", action="store_true")
    parser.add_argument("--resume", action="store_true", help="keep families already measured")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--table-only", action="store_true", help="rewrite the .md from the .json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    default_data, fmt, stem = DATASETS[args.dataset]
    if args.table_only:
        json_path = args.results / f"{stem}.json"
        (args.results / f"{stem}.md").write_text(
            markdown(json.loads(json_path.read_text()), args.dataset)
        )
        return 0
    data = args.data or default_data
    names = paper_ordered_models() if args.models == "all" else args.models.split(",")
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        parser.error(f"unknown models: {', '.join(unknown)}")
    budget = Budget(
        trials=args.trials,
        seconds=args.time_budget,
        max_epochs=args.max_epochs,
        patience=args.patience,
    )
    base = TrainConfig(seed=args.seed, device=args.device, progress=False)
    command = shlex.join(["python", "bench/accuracy.py", *(sys.argv[1:] if argv is None else argv)])
    machine = describe_device(args.device)
    json_path, md_path = args.results / f"{stem}.json", args.results / f"{stem}.md"
    args.results.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if args.resume and json_path.exists():
        results = json.loads(json_path.read_text())

    started = time.perf_counter()
    splits = load_splits(data, fmt)
    train = splits.test.train
    results[META] = {
        "data": str(data.relative_to(REPO.parent))
        if data.is_relative_to(REPO.parent)
        else str(data),
        "format": fmt,
        "preprocessing": "items, then users, with fewer than 5 actions dropped; per user the "
        "first 70% train and the next 10% validate (the search), the first 80% train and the "
        "last 20% test (the retrain)",
        "users": train.num_users,
        "items": train.num_items,
        "interactions": train.num_interactions + splits.test.test.num_interactions,
        "budget_per_family": asdict(budget),
        "budget_note": "every family gets the same budget: at most `trials` trials and "
        "`seconds` of wall time (training and validation) for its search, each trial at most "
        "`max_epochs` epochs; then one retrain on the 80% split for as many epochs as its best "
        "trial ran (not counted in `seconds`). PopRec counts: nothing to search.",
        "machine": machine,
        "command": command,
    }

    def save() -> None:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        md_path.write_text(markdown(results, args.dataset))

    log = lambda message: print(message, flush=True)  # noqa: E731
    for name in names:
        if args.resume and name in results and results[name]["search"]["budget"] == asdict(budget):
            log(f"--- {name}: kept from {json_path}")
            continue
        log(f"--- {name}")
        family_started = time.perf_counter()
        found = search(splits.validation, name, budget, base, log)
        measured = retrain(splits, found, log)
        results[name] = {
            **report(found, measured),
            "wall_seconds": time.perf_counter() - family_started,
            "machine": machine,
            "command": command,
        }
        log(
            f"{name}: validation MAP {found.validation_map:.4f}; test MAP"
            f" {results[name]['validation_selected']['map']:.4f} (validation-selected),"
            f" {results[name]['paper_protocol']['map']:.4f} (paper protocol)"
        )
        save()

    searched = [n for n in paper_ordered_models() if n in results]
    picked = choose_family({n: results[n]["search"]["validation_map"] for n in searched})
    entry = results[picked]
    results["auto"] = {
        "picked": picked,
        "families": searched,
        "validation_map": entry["search"]["validation_map"],
        "paper_protocol": entry["paper_protocol"],
        "validation_selected": entry["validation_selected"],
        "hyperparameters": entry["hyperparameters"],
        "config": entry["config"],
        "budget": {
            "per_family": asdict(budget),
            "families": len(searched),
            "search_seconds": sum(results[n]["search"]["seconds"] for n in searched),
        },
        "how": "training.tune.choose_family over the searches above (best validation MAP), "
        "the function `cosrec train --model auto` calls; the figures are the picked family's "
        "retrain, which `--model auto` repeats with the same seed",
        "machine": machine,
        "command": command,
    }
    save()

    if not args.skip_new_users:
        subject = picked if is_trained(picked) else _best_trained(results, searched)
        config = TrainConfig(**{**results[subject]["config"], "progress": False})
        config = replace(config, epochs=results[subject]["selected_epoch"])
        log(f"--- new users: {subject}, {config.epochs} epochs")
        network = {k: v for k, v in results[subject]["hyperparameters"].items() if k != "L"}
        run = new_user_experiment(splits.test, subject, network, config)
        results["new_users"] = {"model": subject, **run, "machine": machine, "command": command}
        save()
    results[META]["wall_seconds"] = time.perf_counter() - started
    save()
    log(f"wrote {json_path} and {md_path}")
    return 0


def _best_trained(results: dict[str, Any], searched: list[str]) -> str:
    trained = [n for n in searched if is_trained(n)]
    return choose_family({n: results[n]["search"]["validation_map"] for n in trained})


def _settings(entry: dict[str, Any]) -> str:
    """The chosen settings, compactly."""
    config, hp = entry["config"], dict(entry["hyperparameters"])
    if not entry["search"]["params"]:
        return "(counts)"
    parts = [
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
        for k, v in hp.items()
        if k != "first_kernel"
    ]
    loss = config["loss"] + (f"/{config['negatives']}" if config["loss"] != "softmax" else "")
    parts += [
        f"loss={loss}",
        f"lr={config['lr']:.2g}",
        f"decay={config['lr_decay']}",
        f"wd={config['weight_decay']:.1g}",
        f"T={config['T']}",
    ]
    return ", ".join(str(p).replace(" ", "") for p in parts)


def markdown(results: dict[str, Any], dataset: str) -> str:
    meta = results[META]
    budget = meta["budget_per_family"]
    names = [n for n in paper_ordered_models() if n in results]
    lines = [
        f"# {TITLES[dataset]}: every model tuned under the same budget",
        "",
        f"Data: `{meta['data']}` ({meta['format']}), after preprocessing {meta['users']:,}"
        f" users, {meta['items']:,} items, {meta['interactions']:,} interactions. Written by"
        f" `{meta['command']}` on {meta['machine']}; every figure is in"
        f" `{DATASETS[dataset][2]}.json`.",
        "",
        f"Budget per family: at most {budget['trials']} trials and {budget['seconds']:.0f} s of"
        f" search (training + validation, wall time), at most {budget['max_epochs']} epochs a"
        f" trial, patience {budget['patience']} epochs, median pruning after"
        f" {budget['startup_trials']} trials and {budget['warmup_epochs']} epochs; the first"
        " trial is the reference settings. The search reads the validation split only"
        " (70% / next 10%); test is read once, by the retrain on the 80% split.",
        "",
        "| model | validation MAP (search) | test MAP, validation-selected | Prec@1 | Recall@10"
        " | test MAP, paper protocol | epoch (selected / paper) | trials run (pruned) | search s"
        " | settings chosen |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for name in names:
        e = results[name]
        vs, pp, s = e["validation_selected"], e["paper_protocol"], e["search"]
        lines.append(
            f"| {DISPLAY_NAMES.get(name, name)} | {s['validation_map']:.4f} | {vs['map']:.4f}"
            f" | {vs['prec@1']:.4f} | {vs['recall@10']:.4f} | {pp['map']:.4f}"
            f" | {vs['epoch']} / {pp['epoch']} | {s['trials_run']} ({s['trials_pruned']})"
            f" | {s['seconds']:.0f} | {_settings(e)} |"
        )
    if "auto" in results:
        a = results["auto"]
        vs, pp = a["validation_selected"], a["paper_protocol"]
        lines.append(
            f"| **auto** (picked {DISPLAY_NAMES.get(a['picked'], a['picked'])})"
            f" | {a['validation_map']:.4f} | {vs['map']:.4f} | {vs['prec@1']:.4f}"
            f" | {vs['recall@10']:.4f} | {pp['map']:.4f} | {vs['epoch']} / {pp['epoch']}"
            f" | | {a['budget']['search_seconds']:.0f} (all families) | as its row |"
        )
    lines += ["", *verdict(results, names)]
    new_users = results.get("new_users")
    if new_users:
        lines += [
            "",
            f"## Users unseen in training ({DISPLAY_NAMES.get(new_users['model'])}, the auto"
            f" pick's settings, {new_users['epochs']} epochs;"
            f" {new_users['held_out_fraction']:.0%} of users held out)",
            "",
            "| known users MAP | held-out MAP (generic user) | held-out Prec@1 (generic user)"
            " | held-out MAP (popularity) |",
            "|---:|---:|---:|---:|",
            f"| {new_users['known_users']['map']:.4f}"
            f" | {new_users['held_out_generic_user']['map']:.4f}"
            f" | {new_users['held_out_generic_user']['prec@1']:.4f}"
            f" | {new_users['held_out_popularity']['map']:.4f} |",
        ]
    return "\n".join(lines) + "\n"


def verdict(results: dict[str, Any], names: list[str]) -> list[str]:
    """Plain sentences: who is best on test, where CosRec stands, whether auto held up."""
    if not names:
        return []
    test = {n: results[n]["validation_selected"]["map"] for n in names}
    best = max(test, key=test.get)
    lines = [
        f"Best on test (validation-selected MAP): {DISPLAY_NAMES.get(best, best)}"
        f" ({test[best]:.4f})."
    ]
    if "cosrec" in test and best != "cosrec":
        gap = test[best] - test["cosrec"]
        lines.append(
            f"CosRec is **not** the best here: {test['cosrec']:.4f}, {gap:.4f} MAP"
            f" ({100 * gap / test[best]:.1f}%) below {DISPLAY_NAMES.get(best, best)}."
        )
    elif "cosrec" in test:
        others = [test[n] for n in names if n != "cosrec"]
        if others:
            lines.append(
                f"CosRec is the best, {test['cosrec'] - max(others):.4f} MAP above the next."
            )
    if len(names) == 1:
        return [*lines, f"Only {DISPLAY_NAMES.get(best, best)} was searched: nothing to compare."]
    if "auto" in results:
        picked = results["auto"]["picked"]
        beaten = [n for n in names if n != picked and test[n] > test[picked]]
        if beaten:
            lines.append(
                f"The auto pick ({DISPLAY_NAMES.get(picked, picked)}, {test[picked]:.4f}) is"
                " beaten on test by "
                + ", ".join(f"{DISPLAY_NAMES.get(n, n)} ({test[n]:.4f})" for n in beaten)
                + ": validation and test disagree."
            )
        else:
            lines.append(
                f"The auto pick ({DISPLAY_NAMES.get(picked, picked)}) is at least as good on test"
                " as every other model under the same budget."
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())
