"""Where a /recommend's CPU goes: the per-request budget of the running service (issue 15).

The service (1 worker, an ML-1M-sized bundle, 6,040 users' histories in Redis, as in
bench/serve.py) under wrk at c=64 on /recommend n=10 for random users (or the floor route, or
one-event /events), while py-spy samples it (every thread, on CPU only). Each sample is put in
one part of the request by its innermost frame that names one (HTTP parsing, routing and
middleware, body validation, batching hand-off, Redis, onnxruntime, ranking, response JSON,
metrics, the event loop itself); the service's CPU seconds (from /proc) over the requests
served give the CPU per request, and each part's share of the samples its microseconds.
Merges a `cpu_budget` entry per route into bench/results/serve.json.

    python bench/profile_serve.py [--duration 20] [--routes /recommend floor /events]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve import (  # noqa: E402  (bench/serve.py, beside this script)
    NUM_ITEMS,
    NUM_USERS,
    export_bundle_ml1m_size,
    load_histories,
    machine,
    redis_server,
    service,
)

SAMPLE_RATE = 250  # py-spy samples a second

# The part of a request a frame belongs to: the first pattern its "function (file)" matches.
PARTS = [
    ("onnxruntime", r"onnxruntime|contract/bundle\.py.*\bscore\b"),
    ("ranking (top-n)", r"service/ranking\.py"),
    ("business rules (filters, cap per category)", r"service/rules\.py"),
    ("experiments (assignment, answer record, shadow)", r"service/experiments\.py"),
    ("catalogue copy", r"service/catalogue\.py"),
    (
        "Redis (client, protocol, replies)",
        r"service/store\.py|service/pipelining\.py|redis/|hiredis",
    ),
    ("body validation (pydantic)", r"service/bodies\.py|pydantic"),
    (
        "response JSON (FastAPI serialization)",
        r"serialize_response|_prepare_response_content|orjson|json",
    ),
    ("metrics (prometheus_client)", r"prometheus_client|service/middleware\.py"),
    ("batching hand-off", r"service/batching\.py"),
    ("model input and results (recommender)", r"service/recommender\.py|contract/ids\.py"),
    ("handlers, admission", r"service/api/|service/admission\.py"),
    ("routing and middleware (Starlette, FastAPI)", r"starlette/|fastapi/"),
    ("HTTP parsing and writing (uvicorn, httptools)", r"uvicorn/|httptools"),
    ("event loop (asyncio, uvloop)", r"asyncio/|uvloop|selectors"),
]


def recommend_script(fields: str = "") -> str:
    """wrk's Lua: /recommend n=10 for users in turn; `fields`: more JSON fields, ',"k":v'."""
    return f"""
counter = 0
request = function()
  counter = counter + 1
  local body = '{{"user_id":"' .. (counter * 7919 % {NUM_USERS} + 1) .. '","n":10{fields}}}'
  return wrk.format("POST", "/recommend", {{["Content-Type"] = "application/json"}}, body)
end
"""


WRK_SCRIPTS = {
    "/recommend": recommend_script(),
    "floor": f"""
counter = 0
request = function()
  counter = counter + 1
  local body = '{{"user_id":"' .. (counter * 7919 % {NUM_USERS} + 1) .. '","n":10}}'
  return wrk.format("POST", "/bench/floor", {{["Content-Type"] = "application/json"}}, body)
end
""",
    "/events": f"""
counter = 0
request = function()
  counter = counter + 1
  local body = '{{"events":[{{"user_id":"' .. (counter % {NUM_USERS} + 1) .. '","item_id":"'
    .. (counter % {NUM_ITEMS} + 1) .. '","event_id":"p' .. counter .. '"}}]}}'
  return wrk.format("POST", "/events", {{["Content-Type"] = "application/json"}}, body)
end
""",
}


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (its worker, for 1 worker: the process itself)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def part_of(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):  # innermost first
        for name, pattern in PARTS:
            if re.search(pattern, frame):
                return name
    return "other"


def profile(
    port: int, pid: int, label: str, lua: str, duration_s: float, work: Path, gil: bool = False
) -> dict:
    """wrk at c=64 running `lua` against the service on `port` while py-spy samples `pid`.

    gil: sample only the thread holding the GIL (py-spy --gil): the budget is then of the
    time the GIL is held a request, and `gil_share_of_wall` how much of the run it was held
    (one worker's Python runs one thread at a time)."""
    script = work / "wrk.lua"
    script.write_text(lua)
    samples_path = work / "samples.txt"
    samples_path.unlink(missing_ok=True)  # never read the samples of the run before
    sampler = subprocess.Popen(
        [shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record",
         "--pid", str(pid), "--duration", f"{duration_s:g}", "--rate", str(SAMPLE_RATE),
         "--format", "raw", "--output", str(samples_path), "--nonblocking",
         *(["--gil"] if gil else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    cpu_before = cpu_seconds(pid)
    wrk = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{duration_s:g}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cpu = cpu_seconds(pid) - cpu_before
    try:
        _, errors = sampler.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        sampler.kill()
        raise
    if sampler.returncode != 0:
        raise RuntimeError(f"py-spy failed ({sampler.returncode}): {errors.strip()[-500:]}")
    requests = int(re.search(r"(\d+) requests in", wrk.stdout).group(1))
    parts: Counter[str] = Counter()
    for line in samples_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            parts[part_of(stack)] += int(count)
    total = sum(parts.values())
    cpu_us = cpu / requests * 1e6
    held_s = total / SAMPLE_RATE  # with --gil: the seconds some thread held the GIL
    us_per_request = held_s / requests * 1e6 if gil else cpu_us
    result = {
        "route": label,
        "sampled": "the thread holding the GIL" if gil else "every thread on CPU",
        "requests": requests,
        "rps": round(requests / duration_s, 1),
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_request": round(cpu_us, 1),
        "samples": total,
    }
    if gil:
        result["gil_us_per_request"] = round(us_per_request, 1)
        result["gil_share_of_wall"] = round(held_s / duration_s, 3)
    result["budget_us_per_request"] = {
        name: round(us_per_request * count / total, 1) for name, count in parts.most_common()
    }
    result["wrk_latency"] = re.findall(r"\s+(50|90|99)%\s+(\S+)", wrk.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--routes", nargs="+", default=["floor", "/recommend", "/events"])
    parser.add_argument(
        "--precision", choices=["fp32", "int8"], default="fp32", help="COSREC_PRECISION"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.json")
    args = parser.parse_args(argv)
    command = " ".join(
        ["python bench/profile_serve.py", *(argv if argv is not None else sys.argv[1:])]
    )
    work = Path(tempfile.mkdtemp(prefix="cosrec-profile-"))
    budgets = []
    try:
        bundle = export_bundle_ml1m_size(work / "bundle")
        with (
            redis_server(work) as redis_url,
            service(bundle, redis_url, 1, "cpu", args.precision) as running,
        ):
            port, pid = running.port, running.process.pid  # 1 worker: the process serves
            load_histories(port, redis_url)
            for route in args.routes:
                time.sleep(2)
                budget = profile(port, pid, route, WRK_SCRIPTS[route], args.duration, work)
                print(json.dumps(budget, indent=1), flush=True)
                budgets.append(budget)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    rows = [
        row
        for row in rows
        if row.get("what") != "cpu_budget" or row.get("precision", "fp32") != args.precision
    ]
    rows.append(
        {
            "what": "cpu_budget",
            "precision": args.precision,
            "workers": 1,
            "concurrency": 64,
            "budgets": budgets,
            "machine": machine(),
            "command": command,
        }
    )
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
