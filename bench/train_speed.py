"""Training speed on ML-1M: seconds per epoch (759,805 instances at L=5, T=3), per setting.

Times `--batches` real training steps (the loop's own `train_step`, on shuffled ML-1M
instances with fresh negatives) after a short warm-up, and extrapolates to a whole epoch:
epoch seconds = sampling time + batches per epoch x mean step time. On a shared machine a
fraction of an epoch is what can be measured; the JSON says so, and records the load average,
the process CPU time and the fastest 5-batch chunk beside the mean so that contention shows.

    python bench/train_speed.py               # fast-fp32, literal-fp32 and fast-bf16, all cores
    python bench/train_speed.py --settings fast-fp32:200,literal-fp32 --batches 50 --threads 1
    python bench/train_speed.py --device cuda --settings fast-fp32,fast-fp32-graph,literal-fp32 \
        --batches 300 --out bench/results/gpu/train_speed.json

A setting may carry its own batch count after a colon (bf16 is slow on CPUs without native
bf16 arithmetic, so it gets fewer by default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cosrec.machine import describe_cpu  # noqa: E402
from model import build_model  # noqa: E402
from training.cuda_graph import EAGER_WARMUP_STEPS, GraphedTrainStep  # noqa: E402
from training.fit import TrainConfig, make_optimizer, set_seed, train_step  # noqa: E402
from training.instances import training_instances  # noqa: E402
from training.readers import read_caser  # noqa: E402
from training.sampling import NegativeSampler  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml-1m" / "split" / "test" / "train.txt.gz"
CHUNK = 5  # batches per timed chunk
# setting name -> (model.fast, bf16 autocast, step replayed as a CUDA graph)
SETTINGS = {
    "fast-fp32": (True, False, False),
    "fast-bf16": (True, True, False),
    "literal-fp32": (False, False, False),
    "literal-bf16": (False, True, False),
    "fast-fp32-graph": (True, False, True),  # CUDA only
    "literal-fp32-graph": (False, False, True),  # CUDA only
}


def time_setting(
    model_name, train, instances, sampler, config, fast, graphs, batches, warmup
) -> dict:
    set_seed(config.seed)
    device = torch.device(config.device)
    model = build_model(model_name, train.num_users, train.num_items).to(device).train()
    model.fast = fast
    optimizer = make_optimizer(model, config, capturable=graphs)
    # Warm-up batches cover the graph's eager steps and its capture.
    run_step = GraphedTrainStep(config.batch_size, train_step) if graphs else train_step
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(instances))[: (batches + warmup) * config.batch_size]
    users = instances.users[order]
    negatives = torch.from_numpy(sampler.sample(users, config.negatives, rng)).to(device)
    inputs = torch.from_numpy(instances.inputs[order]).to(device)
    targets = torch.from_numpy(instances.targets[order]).to(device)
    users = torch.from_numpy(users).to(device)

    def synchronize() -> None:  # GPU work is asynchronous: wait for it before reading clocks
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(index: int) -> None:
        rows = slice(index * config.batch_size, (index + 1) * config.batch_size)
        run_step(
            model, optimizer, inputs[rows], users[rows], targets[rows], negatives[rows], config.bf16
        )

    for index in range(warmup):
        step(index)
    synchronize()
    # Timed in chunks: on a shared machine the fastest chunk is the best estimate of what the
    # code costs when it has the cores to itself; the mean is what this run actually saw.
    walls, cpus = [], []
    for chunk in range(warmup, warmup + batches, CHUNK):
        wall, cpu = time.perf_counter(), time.process_time()
        for index in range(chunk, min(chunk + CHUNK, warmup + batches)):
            step(index)
        synchronize()
        count = min(chunk + CHUNK, warmup + batches) - chunk
        walls.append((time.perf_counter() - wall) / count)
        cpus.append((time.process_time() - cpu) / count)
    return {
        "wall_seconds_per_batch": sum(walls) / len(walls),
        "cpu_seconds_per_batch": sum(cpus) / len(cpus),
        "fastest_chunk_wall_seconds_per_batch": min(walls),
    }


def parse_settings(text: str, default_batches: int) -> dict[str, int]:
    """ "fast-fp32:200,literal-fp32" -> {"fast-fp32": 200, "literal-fp32": default_batches}."""
    settings = {}
    for item in text.split(","):
        name, _, count = item.partition(":")
        if name not in SETTINGS:
            raise ValueError(f"unknown setting {name!r} (choose from: {', '.join(SETTINGS)})")
        batches = int(count) if count.isdigit() else default_batches if not count else 0
        if batches < 1:
            raise ValueError(f"bad batch count in {item!r}")
        settings[name] = batches
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Caser-format train file")
    parser.add_argument("--model", default="cosrec")
    parser.add_argument("--settings", default="fast-fp32,literal-fp32:50,fast-bf16:20")
    parser.add_argument("--batches", type=int, default=100, help="timed batches per setting")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_speed.json")
    args = parser.parse_args(argv)
    try:
        settings = parse_settings(args.settings, args.batches)
    except ValueError as error:
        print(f"train_speed: {error}", file=sys.stderr)
        return 2
    if args.warmup < 0 or args.threads < 1:
        print("train_speed: --warmup must be >= 0 and --threads >= 1", file=sys.stderr)
        return 2
    graphed = [name for name in settings if SETTINGS[name][2]]
    if graphed and args.device != "cuda":
        print(f"train_speed: {', '.join(graphed)} need --device cuda", file=sys.stderr)
        return 2
    if graphed and args.warmup <= EAGER_WARMUP_STEPS:
        print(f"train_speed: graphs need --warmup > {EAGER_WARMUP_STEPS}", file=sys.stderr)
        return 2
    if not args.data.exists():
        print(f"train_speed: no such data file: {args.data}", file=sys.stderr)
        return 2
    if args.device not in {"cpu", "cuda"} or (
        args.device == "cuda" and not torch.cuda.is_available()
    ):
        print(f"train_speed: device {args.device!r} is not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    train = read_caser(args.data)
    config = TrainConfig(device=args.device)
    started = time.perf_counter()
    instances = training_instances(train.sequences, config.L, config.T)
    instances_seconds = time.perf_counter() - started
    started = time.perf_counter()
    sampler = NegativeSampler(train.sequences, train.num_items)
    sampler_seconds = time.perf_counter() - started
    started = time.perf_counter()  # what every epoch pays before its first batch, as in fit
    rng = np.random.default_rng(0)
    order = rng.permutation(len(instances))
    sampler.sample(instances.users, config.negatives, rng)[order]
    sampling_seconds = time.perf_counter() - started
    batches_per_epoch = math.ceil(len(instances) / config.batch_size)

    results = {}
    for name, batches in settings.items():
        fast, bf16, graphs = SETTINGS[name]
        config.bf16 = bf16
        load_before = os.getloadavg()[0]
        timing = time_setting(
            args.model, train, instances, sampler, config, fast, graphs, batches, args.warmup
        )
        epoch = sampling_seconds + batches_per_epoch * timing["wall_seconds_per_batch"]
        best = sampling_seconds + batches_per_epoch * timing["fastest_chunk_wall_seconds_per_batch"]
        # CPU seconds summed over threads: unlike wall time, barely moved by other processes
        # taking turns on the cores, so it shows what the code costs on a shared machine.
        epoch_cpu = sampling_seconds + batches_per_epoch * timing["cpu_seconds_per_batch"]
        results[name] = {
            "timed_batches": batches,
            **{k: round(v, 5) for k, v in timing.items()},
            "epoch_seconds_extrapolated": round(epoch, 1),
            "epoch_seconds_at_fastest_chunk": round(best, 1),
            "epoch_cpu_seconds_extrapolated": round(epoch_cpu, 1),
            "instances_per_second": round(len(instances) / epoch),
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
        }
        print(f"{name}: {results[name]}", flush=True)

    report = {
        "what": f"one training epoch of {args.model} on ML-1M, extrapolated from timed "
        f"batches of {config.batch_size} (after {args.warmup} warm-up batches per setting)",
        "machine": f"{describe_cpu()}, {args.threads} torch threads, "
        f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"
        + (f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""),
        "device": args.device,
        "command": shlex.join(
            ["python", "bench/train_speed.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "data": str(args.data),
        "instances": len(instances),
        "batches_per_epoch": batches_per_epoch,
        "seconds": {
            "instances": round(instances_seconds, 3),
            "sampler_setup": round(sampler_seconds, 3),
            "negatives_per_epoch": round(sampling_seconds, 3),
        },
        "settings": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
