"""How far the training fast path can go against the literal network on this CPU.

Times CosRec's training step (batch 512, ML-1M's sizes: 6,040 users, 3,416 items, random
batches: speed does not depend on the data) for the fast path and the literal Table 1 network
in alternating rounds (medians), then profiles the fast step and sums the time of its matrix
products (aten mm, bmm, addmm, baddbmm). Those products are work the fast path cannot skip:
even if every other operation cost nothing, the step would take at least their time, so
literal / products is the most the fast path could reach on this machine. The operations
besides the products (batch norm, ReLU, copies, Adam ...) are listed with their time.

The lever issue 15 names for those is fusing them, so the fast step also runs with its network
(`sequence_features`) compiled by torch.compile (inductor, which fuses elementwise work into
C++ loops) in each of `--compile-modes`, in the same alternating rounds; the loss and the
optimizer stay eager. Each mode compiles from an empty inductor cache, and the report says how
many graphs dynamo captured and how long the first steps took (a compiled run with no graph
would be eager in disguise; the first mode's also include inductor's own start-up):

    python bench/train_bound.py [--rounds 7] [--threads 2] [--compile-modes default ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from cosrec.machine import describe_device  # noqa: E402
from model import build_model  # noqa: E402
from training.fit import TrainConfig, make_optimizer, set_seed, train_step  # noqa: E402

NUM_USERS, NUM_ITEMS, BATCH, STEPS_PER_ROUND = 6040, 3416, 512, 5
MATRIX_PRODUCTS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def make_step(fast: bool, compile_mode: str | None = None):
    """A closure running one training step of a fresh CosRec (fast or literal) on one batch;
    with `compile_mode`, its network compiled by torch.compile in that mode."""
    set_seed(0)
    config = TrainConfig()
    model = build_model("cosrec", NUM_USERS, NUM_ITEMS, L=config.L).train()
    model.fast = fast
    if compile_mode is not None:
        mode = None if compile_mode == "default" else compile_mode
        model.sequence_features = torch.compile(model.sequence_features, mode=mode)
    optimizer = make_optimizer(model, config)
    items = torch.randint(1, NUM_ITEMS + 1, (BATCH, config.L))
    users = torch.randint(1, NUM_USERS + 1, (BATCH,))
    targets = torch.randint(1, NUM_ITEMS + 1, (BATCH, config.T))
    negatives = torch.randint(1, NUM_ITEMS + 1, (BATCH, config.negatives))
    return lambda: train_step(model, optimizer, items, users, targets, negatives)


def seconds_per_step(step, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def operation_shares(step, steps: int) -> dict[str, float]:
    """Each operation's share of the step's operation time (self CPU, torch's profiler)."""
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        for _ in range(steps):
            step()
    events = profiled.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    return {event.key: event.self_cpu_time_total / total for event in events}


def compiled_step(mode: str, cache: Path):
    """The fast step compiled in `mode` with `cache` (empty) as inductor's cache, after its
    first steps (where it compiles); with the graphs dynamo captured and those steps' seconds."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    graphs_before = counters["stats"]["unique_graphs"]
    step = make_step(True, mode)
    started = time.perf_counter()
    seconds_per_step(step, 3)
    compiling = {
        "graphs_captured": int(counters["stats"]["unique_graphs"] - graphs_before),
        "first_3_steps_s": round(time.perf_counter() - started, 1),
    }
    return step, compiling


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating timed rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--compile-modes",
        nargs="*",
        default=["default", "max-autotune-no-cudagraphs"],
        help="torch.compile modes to time the fast step in (none: skip)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_bound.json")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        print("train_bound: --rounds and --threads must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    steps = {"fast": make_step(True), "literal": make_step(False)}
    for step in steps.values():  # warm-up: first-call allocations and kernel choices
        seconds_per_step(step, 3)
    compiling = {}
    with tempfile.TemporaryDirectory(prefix="cosrec-inductor-") as caches:
        for mode in args.compile_modes:
            cache = Path(caches) / mode
            steps[f"fast, compiled ({mode})"], compiling[mode] = compiled_step(mode, cache)
        rounds: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                rounds[name].append(seconds_per_step(step, STEPS_PER_ROUND))
    medians = {name: statistics.median(times) for name, times in rounds.items()}
    fast, literal = medians["fast"], medians["literal"]
    profiles = [operation_shares(steps["fast"], STEPS_PER_ROUND) for _ in range(3)]
    shares = {
        op: statistics.median(p.get(op, 0.0) for p in profiles) for op in set().union(*profiles)
    }
    share = sum(shares[op] for op in MATRIX_PRODUCTS if op in shares)
    products = share * fast
    others = sorted((op for op in shares if op not in MATRIX_PRODUCTS), key=lambda op: -shares[op])
    report = {
        "what": "CosRec training step, batch 512: the fast path against the literal network, "
        "and the fast path's matrix products (a floor on its step time)",
        "machine": describe_device("cpu"),
        "command": shlex.join(
            ["python", "bench/train_bound.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "ms_per_step_median": {k: round(v * 1e3, 1) for k, v in medians.items()},
        "ms_per_step_rounds": {k: [round(v * 1e3, 1) for v in r] for k, r in rounds.items()},
        "speedup": round(literal / fast, 2),
        "speedup_compiled": {
            mode: round(literal / medians[f"fast, compiled ({mode})"], 2) for mode in compiling
        },
        "compiling": compiling,
        "fast_matrix_product_share": round(share, 3),
        "fast_matrix_products_ms": round(products * 1e3, 1),
        "speedup_if_nothing_but_matrix_products": round(literal / products, 2),
        "fast_other_operations_ms": round((1 - share) * fast * 1e3, 1),
        "fast_heaviest_other_operations_ms": {
            op: round(shares[op] * fast * 1e3, 1) for op in others[:10]
        },
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
