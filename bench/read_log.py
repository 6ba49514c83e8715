"""Reading a 10-million-event log into `Sequences`: the csv module against pyarrow.

    python bench/read_log.py [--events 10000000] [--repeats 3] [--dir /tmp/cosrec-read-log]

Generates a log of `--events` events (user, item, timestamp: 16-hex-digit user ids, ASIN-like
item ids, Unix seconds over a year, in time order but for 1% of late arrivals; users and items
drawn Zipf-like) once, as CSV and as Parquet (snappy), and reads it with

- `read_csv`: today's reader (`training.readers.read_csv`, the csv module, line by line);
- `arrow_csv`: `training.arrow_readers.read_csv_arrow` (what `--format csv` now runs);
- `parquet`: `training.arrow_readers.read_parquet` (`--format parquet`).

Each read runs in a fresh process, `--repeats` times per reader: wall seconds of the read call
and the process's peak RSS (ru_maxrss), medians reported. All readers must give the same
`Sequences` (fingerprint). Results: bench/results/read_log.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

READERS = ("read_csv", "arrow_csv", "parquet")


def generate(events: int, directory: Path, seed: int = 0) -> tuple[Path, Path, dict]:
    """The log as CSV and Parquet in `directory` (reused when already there)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    csv_path, parquet_path = directory / f"log-{events}.csv", directory / f"log-{events}.parquet"
    num_users, num_items = max(1, events // 20), max(1, events // 100)
    shape = {"events": events, "users_drawn_from": num_users, "items_drawn_from": num_items}
    if csv_path.exists() and parquet_path.exists():
        return csv_path, parquet_path, shape
    rng = np.random.default_rng(seed)
    # 16 hex digits, as hashed account ids look
    users = np.char.mod("%016x", rng.integers(0, 2**63, num_users, dtype=np.int64))
    alphabet = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    items = np.char.add("B0", ["".join(r) for r in alphabet[rng.integers(0, 36, (num_items, 8))]])
    # Zipf-like activity and popularity, over shuffled ranks
    user_rank = rng.permutation(num_users)[np.minimum(rng.zipf(1.2, events), num_users) - 1]
    item_rank = rng.permutation(num_items)[np.minimum(rng.zipf(1.1, events), num_items) - 1]
    start = 1_700_000_000
    times = np.sort(rng.integers(start, start + 365 * 86400, events))
    late = rng.random(events) < 0.01  # late arrivals: logged after later events
    times[late] -= rng.integers(1, 3600, late.sum())
    table = pa.table(
        {
            "user": pa.array(users[user_rank]),
            "item": pa.array(items[item_rank]),
            "timestamp": pa.array(times),
        }
    )
    pacsv.write_csv(table, csv_path, pacsv.WriteOptions(quoting_style="none"))
    pq.write_table(table, parquet_path)
    return csv_path, parquet_path, shape


def measure(reader: str, path: Path) -> dict:
    """In this process: one read, its wall seconds and the process's peak RSS."""
    from training.arrow_readers import read_csv_arrow, read_parquet
    from training.readers import read_csv

    read = {"read_csv": read_csv, "arrow_csv": read_csv_arrow, "parquet": read_parquet}[reader]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    seqs = read(path)
    seconds = time.perf_counter() - started
    if seqs is None:
        raise SystemExit(f"{reader}: handed {path} back to the line-by-line reader")
    return {
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": before / 1024,
        "fingerprint": seqs.fingerprint(),
        "users": seqs.num_users,
        "items": seqs.num_items,
        "interactions": seqs.num_interactions,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/cosrec-read-log"))
    parser.add_argument("--readers", default=",".join(READERS))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "read_log.json")
    parser.add_argument("--measure", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return 0

    import pyarrow

    from cosrec.machine import describe_cpu

    started = time.perf_counter()
    csv_path, parquet_path, shape = generate(args.events, args.dir)
    print(f"log ready in {time.perf_counter() - started:.0f} s: {csv_path}, {parquet_path}")
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):  # interleaved, so that a slow spell hits every reader
        for reader in args.readers.split(","):
            path = parquet_path if reader == "parquet" else csv_path
            done = subprocess.run(
                [sys.executable, __file__, "--measure", reader, str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs.setdefault(reader, []).append(run)
            print(f"{reader}: {run['seconds']:.2f} s, peak RSS {run['peak_rss_mb']:.0f} MB")
    fingerprints = {run["fingerprint"] for reader_runs in runs.values() for run in reader_runs}
    if len(fingerprints) != 1:
        raise SystemExit(f"the readers disagree: {fingerprints}")
    first = next(iter(runs.values()))[0]
    results = {
        reader: {
            "seconds_median": statistics.median(run["seconds"] for run in reader_runs),
            "peak_rss_mb_median": statistics.median(run["peak_rss_mb"] for run in reader_runs),
            "seconds": [round(run["seconds"], 3) for run in reader_runs],
            "peak_rss_mb": [round(run["peak_rss_mb"]) for run in reader_runs],
            "rss_before_read_mb": round(reader_runs[0]["rss_before_mb"]),
        }
        for reader, reader_runs in runs.items()
    }
    if "read_csv" in results:
        base = results["read_csv"]
        for result in results.values():
            result["speedup_vs_read_csv"] = round(
                base["seconds_median"] / result["seconds_median"], 1
            )
            result["peak_rss_vs_read_csv"] = round(
                result["peak_rss_mb_median"] / base["peak_rss_mb_median"], 2
            )
    report = {
        "what": "reading a generated interaction log into Sequences, per reader (fresh process)",
        "log": {
            **shape,
            "users": first["users"],
            "items": first["items"],
            "csv_mb": round(csv_path.stat().st_size / 2**20),
            "parquet_mb": round(parquet_path.stat().st_size / 2**20),
        },
        "same_sequences": True,
        "readers": results,
        "repeats": args.repeats,
        "machine": describe_cpu(),
        "software": f"Python {platform.python_version()}, pyarrow {pyarrow.__version__}",
        "command": "python bench/read_log.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
