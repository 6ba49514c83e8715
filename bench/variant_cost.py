"""What rules and a second variant cost the model's path, in process (issue 14); figures to
bench/results/variant_cost.json.

bench/experiments.py measures the whole service; this script isolates the work a micro-batch
does after its Redis read (`service.model_answers.model_answers`, as the recommender calls it:
once per variant of the batch) so the parts can be told apart without HTTP noise. Two
ML-1M-sized bundles (random weights), bench/experiments.py's catalogue and filters; for each
batch size, in interleaved repetitions (medians, microseconds per row):

- off: one bundle, no catalogue, no rules; rules: the same with the catalogue and the filters;
  variants (mixed batch): half the rows through bundle A, half through B, as a batch of two
  variants runs (the service's batches hold one variant since: service/batching.py's group);
  on (mixed batch): both.
- onnxruntime alone: one call of the whole batch; two calls of half the batch on one session
  (the split); two calls on two sessions (the split and the second set of weights).

Then onnxruntime's own profiler over one session at batch 1 and the largest batch: the nodes
taking the most time, with the bytes of the constant weights each reads. Those bytes are read
on every call whatever the batch, which is why two half-batch calls cost more than one.

    python bench/variant_cost.py [--batches 10 20 40] [--repeats 300]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from experiments import FILTERS, write_catalogue  # noqa: E402  (beside this script)
from serve import NUM_ITEMS, NUM_USERS, export_bundle_ml1m_size, machine  # noqa: E402

from contract.bundle import ONNX_FILES, Bundle, load_bundle, session_options  # noqa: E402
from cosrec.machine import describe_cpu  # noqa: E402
from service.catalogue import catalogue_of, read_catalogue_file  # noqa: E402
from service.model_answers import model_answers  # noqa: E402
from service.ranking import exclusions  # noqa: E402
from service.rules import (  # noqa: E402
    NO_RULES,
    CatalogueIndex,
    Rules,
    deployment_rules,
    resolve_rules,
)
from service.schemas import request_schemas  # noqa: E402
from service.settings import Settings  # noqa: E402

N = 10  # items a request asks for, as in bench/serve.py


def request_rules(bundle_dir: Path) -> Rules:
    """The rules the service gives a request with bench/experiments.py's filters: the same
    validation, and the deployment defaults of this environment's settings (COSREC_*)."""
    settings = Settings(bundle=bundle_dir)
    query = request_schemas(settings).recommend.model_validate({"user_id": "u", **FILTERS})
    return resolve_rules(query, deployment_rules(settings))


def split_batch(bundles: list[Bundle], batch: int) -> list[tuple[Bundle, np.ndarray, np.ndarray]]:
    """A random batch of `batch` histories split evenly across `bundles`: per bundle, its
    rows' items [rows, L] and users [rows]."""
    rng = np.random.default_rng(batch)
    length = bundles[0].sequence_length
    items = rng.integers(1, NUM_ITEMS + 1, size=(batch, length), dtype=np.int64)
    users = rng.integers(1, NUM_USERS + 1, size=batch, dtype=np.int64)
    parts = np.array_split(np.arange(batch), len(bundles))
    return [(b, items[rows], users[rows]) for b, rows in zip(bundles, parts, strict=True)]


def model_path(bundles: list[Bundle], indexes: list[CatalogueIndex], rules: Rules, batch: int):
    """A closure running `model_answers` over a batch split evenly across `bundles` (one
    call per bundle, as the recommender makes per variant)."""
    calls = []
    for (bundle, items, users), index in zip(split_batch(bundles, batch), indexes, strict=True):
        rows = len(users)
        n = np.full(rows, N, dtype=np.intp)
        nothing = exclusions(bundle.items.utf8_positions, [[] for _ in range(rows)])
        calls.append((bundle, index, items, users, n, nothing, [rules] * rows))

    def run() -> None:
        now = time.time()
        for bundle, index, items, users, n, nothing, row_rules in calls:
            model_answers(bundle, index, items, users, n, nothing, row_rules, now)

    return run


def scoring(bundles: list[Bundle], batch: int) -> Callable[[], None]:
    """A closure running onnxruntime alone over a batch split evenly across `bundles`."""
    feeds = split_batch(bundles, batch)

    def run() -> None:
        for bundle, items, users in feeds:
            bundle.score(items, users)

    return run


def interleaved_medians(runs: dict[str, Callable[[], None]], repeats: int, batch: int) -> dict:
    """Median microseconds per row of each run, the runs taking turns (drift hits all alike)."""
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(s) * 1e6 / batch, 1) for name, s in seconds.items()}


def heaviest_nodes(bundle_dir: Path, batch: int, calls: int, top: int, work: Path) -> dict:
    """onnxruntime's profile of one CPU session (the service's options, 1 thread) at `batch`
    rows: the `top` nodes by time per call, with the bytes of the constants each reads (in the
    graph as onnxruntime optimised it: folded weights included)."""
    import onnx
    import onnxruntime as ort

    options = session_options(threads=1)
    options.log_severity_level = 3  # not the warning that an optimised graph fits this CPU only
    options.enable_profiling = True
    options.profile_file_prefix = str(work / f"profile-{batch}")
    optimised = work / f"optimised-{batch}.onnx"
    options.optimized_model_filepath = str(optimised)
    session = ort.InferenceSession(
        str(bundle_dir / ONNX_FILES["fp32"]), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(batch)
    items_input, users_input = (i.name for i in session.get_inputs())
    length = session.get_inputs()[0].shape[1]
    feeds = {
        items_input: rng.integers(1, NUM_ITEMS + 1, size=(batch, length), dtype=np.int64),
        users_input: rng.integers(1, NUM_USERS + 1, size=batch, dtype=np.int64),
    }
    for _ in range(calls):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    micros: dict[str, float] = defaultdict(float)
    op_of: dict[str, str] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            micros[node] += event["dur"] / calls
            op_of[node] = event["args"].get("op_name", "")
    graph = onnx.load(str(optimised)).graph
    constant_bytes = {i.name: int(np.prod(i.dims)) * 4 for i in graph.initializer}
    reads = {
        node.name: sum(constant_bytes.get(name, 0) for name in node.input) for node in graph.node
    }
    rows = sorted(micros.items(), key=lambda kv: -kv[1])[:top]
    return {
        "batch": batch,
        "kernel_us_per_call": round(sum(micros.values()), 1),
        "heaviest": [
            {
                "node": node,
                "op": op_of[node],
                "us_per_call": round(us, 1),
                "constant_mb": round(reads.get(node, 0) / 2**20, 2),
            }
            for node, us in rows
        ],
        "constant_mb_total": round(sum(constant_bytes.values()) / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "variant_cost.json"
    )
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    result: dict = {
        "command": shlex.join(["python", "bench/variant_cost.py", *argv]),
        "machine": machine(),
        "cpu": describe_cpu(),
        "unit": "median microseconds per row, interleaved repetitions",
        "repeats": args.repeats,
        "request_filters": FILTERS,
    }
    with tempfile.TemporaryDirectory(prefix="cosrec-variant-cost-") as tmp:
        work = Path(tmp)
        print("exporting two ML-1M-sized bundles ...", flush=True)
        paths = [export_bundle_ml1m_size(work / name, seed) for seed, name in enumerate("ab")]
        a, b = (load_bundle(path) for path in paths)
        write_catalogue(work / "catalogue.jsonl")
        catalogue = catalogue_of(read_catalogue_file(work / "catalogue.jsonl"))
        listed = [CatalogueIndex(catalogue, bundle, True) for bundle in (a, b)]
        bare = [CatalogueIndex(catalogue_of([]), bundle, True) for bundle in (a, b)]
        rules = request_rules(paths[0])
        rows = []
        for batch in args.batches:
            runs = {
                "off": model_path([a], bare[:1], NO_RULES, batch),
                "rules": model_path([a], listed[:1], rules, batch),
                "variants (mixed batch)": model_path([a, b], bare, NO_RULES, batch),
                "on (mixed batch)": model_path([a, b], listed, rules, batch),
                "onnxruntime, one call": scoring([a], batch),
                "onnxruntime, two calls, one session": scoring([a, a], batch),
                "onnxruntime, two calls, two sessions": scoring([a, b], batch),
            }
            medians = interleaved_medians(runs, args.repeats, batch)
            off = medians["off"]
            one_call = medians["onnxruntime, one call"]
            row = {
                "batch": batch,
                "us_per_row": medians,
                "added_to_off_us_per_row": {
                    name: round(medians[name] - off, 1)
                    for name in ("rules", "variants (mixed batch)", "on (mixed batch)")
                },
                "second_variant_in_onnxruntime_us_per_row": {
                    "split": round(medians["onnxruntime, two calls, one session"] - one_call, 1),
                    "split and second weights": round(
                        medians["onnxruntime, two calls, two sessions"] - one_call, 1
                    ),
                },
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        result["rows"] = rows
        result["onnxruntime_profile"] = [
            heaviest_nodes(paths[0], batch, 200, 6, work) for batch in (1, max(args.batches))
        ]
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
