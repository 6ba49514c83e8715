"""Business rules and online experiments, measured (issue 14); figures to
bench/results/experiments.json.

1. A simulated experiment where variant B is truly better: simulated users request
   /recommend from the real service (two ML-1M-sized bundles, A and B, half the users each)
   and click one of the shown items with probability 5% under A and 7% under B (a purchase
   follows 30% of clicks), sending typed events that name the recommendation_id. The run
   stops at the fixed horizon a power calculation gives (95% power to find that difference at
   the 5% level, two-sided), then `cosrec experiment report`'s library reads Redis back. Beside
   it, without the service, the same test on 2,000 simulated experiments of that size: how
   often it finds B better (power) and how often it finds a difference between equal variants
   (the false-positive rate).
2. What rules and experiments cost: /recommend at concurrency 64, the plain service ("off":
   no catalogue, one bundle, plain requests) against the service with a 3,916-item catalogue,
   two variants, the record of every answer and requests with filters ("on"); and "on" plus a
   shadow bundle scoring 10% of requests; and each part of "on" alone on the plain service
   (rules only, variants only, record only), to show which part costs what. All run at once
   on the same Redis (6,040 users' histories) and are measured in turn, twelve rounds of 2 s
   (bench/serve.py's load generator and bundle sizes): throughput as the median of each
   round's ratio to "off", latency as the percentiles of all rounds' requests together (a
   p99 of one short run is a few stalls; identical services measured so differed by up to
   4%). Then where the difference goes: wrk at c=64 on "off" and "on" while py-spy samples
   each (bench/profile_serve.py's budget per request): every thread's CPU, then only the
   thread holding the GIL (one worker's Python runs one thread at a time).

    .venv/bin/python bench/experiments.py [--duration 2] [--repeats 12] [--concurrency 64]
        [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from profile_serve import profile, recommend_script  # noqa: E402
from serve import (  # noqa: E402  (bench/serve.py, beside this script)
    NUM_ITEMS,
    NUM_USERS,
    export_bundle_ml1m_size,
    http_post,
    load_histories,
    machine,
    metric_samples,
    redis_server,
    run_load,
)

from contract.attribution import read_attribution  # noqa: E402
from cosrec.experiments import Z_95, experiment_report, two_proportion_test  # noqa: E402
from cosrec.machine import describe_cpu  # noqa: E402
from cosrec.processes import ServiceProcess  # noqa: E402

GENRES = [f"genre-{k}" for k in range(18)]  # ML-1M has 18 genres
CATALOGUE_ONLY = 500  # items the model does not know
RATE_A, RATE_B, PURCHASE_AFTER_CLICK = 0.05, 0.07, 0.3
POWER = 0.95
Z_POWER = 1.6448536269514722  # the standard normal's 95% quantile


def write_catalogue(path: Path, seed: int = 0) -> dict:
    """Every model item with 1-3 genres and a tag or two, 5% unavailable, 5% with an
    availability window (half of them closed now), and CATALOGUE_ONLY items the model does
    not know."""
    rng = random.Random(seed)
    now = time.time()
    lines = []
    counts = {"unavailable": 0, "windowed": 0}
    ids = [str(i) for i in range(1, NUM_ITEMS + 1)]
    ids += [f"new-{k}" for k in range(CATALOGUE_ONLY)]
    for item_id in ids:
        item = {
            "item_id": item_id,
            "categories": rng.sample(GENRES, rng.randint(1, 3)),
            "tags": rng.sample(["classic", "new", "award", "family", "dark"], rng.randint(0, 2)),
        }
        draw = rng.random()
        if draw < 0.05:
            item["available"] = False
            counts["unavailable"] += 1
        elif draw < 0.10:
            item["available_from"] = now + rng.choice([-1, 1]) * 86_400
            counts["windowed"] += 1
        if item_id.startswith("new-"):
            item["popularity"] = rng.randint(0, 100)
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n")
    return {"items": len(ids), "catalogue_only": CATALOGUE_ONLY, **counts}


FILTERS = {"exclude_categories": [GENRES[-1]], "exclude_tags": ["dark"], "max_per_category": 3}


def recommend_pool(filters: dict | None, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        http_post(
            "/recommend",
            json.dumps(
                {"user_id": str(rng.randint(1, NUM_USERS)), "n": 10, **(filters or {})}
            ).encode(),
        )
        for _ in range(4096)
    ]


def cycling(pool: list[bytes]):
    counter = iter(range(1 << 62))
    return lambda: pool[next(counter) % len(pool)]


# ---------------------------------------------------------------- 1: the simulated experiment
def per_arm_sample_size(p_a: float, p_b: float) -> int:
    """Recommendations per variant for POWER at the 5% level, two-sided (normal approximation)."""
    mean = (p_a + p_b) / 2
    root = Z_95 * math.sqrt(2 * mean * (1 - mean)) + Z_POWER * math.sqrt(
        p_a * (1 - p_a) + p_b * (1 - p_b)
    )
    return math.ceil(root**2 / (p_a - p_b) ** 2)


async def simulate(
    url: str, redis_url: str, recommendations: int, seed: int, checkpoints: int
) -> list[dict]:
    """Simulated users against the service (16 at a time); the report's figures at each of
    `checkpoints` points on the way (the last one is the fixed horizon)."""
    import httpx

    rng = random.Random(seed)
    state = {"served": 0, "events": 0, "clicks": 0, "purchases": 0}
    trace: list[dict] = []
    step = max(1, recommendations // checkpoints)

    async def one_user(client: httpx.AsyncClient) -> None:
        user = str(rng.randint(1, NUM_USERS))
        reply = await client.post("/recommend", json={"user_id": user, "n": 10})
        reply.raise_for_status()
        body = reply.json()
        state["served"] += 1
        rate = RATE_B if body["variant"] == "B" else RATE_A
        if rng.random() < rate:
            item = rng.choice(body["items"])["item_id"]
            rid = body["recommendation_id"]
            events = [{"user_id": user, "item_id": item, "type": "click", "recommendation_id": rid}]
            state["clicks"] += 1
            if rng.random() < PURCHASE_AFTER_CLICK:
                events.append(
                    {"user_id": user, "item_id": item, "type": "purchase", "recommendation_id": rid}
                )
                state["purchases"] += 1
            stored = await client.post("/events", json={"events": events})
            stored.raise_for_status()
            state["events"] += len(events)

    # Idle connections are dropped after 1 s, well before the service closes them
    # (COSREC_KEEP_ALIVE_S, 5 s): at httpx's default, also 5 s, a connection idle through a
    # slow report could be reused just as the service closed it (one run failed so).
    limits = httpx.Limits(keepalive_expiry=1.0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        issued = 0
        while issued < recommendations:
            batch = min(step, recommendations - issued)
            queue = iter(range(batch))

            async def worker(queue=queue) -> None:
                for _ in queue:
                    await one_user(client)

            await asyncio.gather(*(worker() for _ in range(16)))
            issued += batch
            await asyncio.sleep(0.3)  # the service writes its record of the answers meanwhile
            trace.append(report_now(redis_url, state))
    return trace


def report_now(redis_url: str, state: dict) -> dict:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        attribution = read_attribution(client)
    finally:
        client.close()
    reports = {r.variant: r for r in experiment_report(attribution, "A", "click", "purchase")}
    b = reports["B"]
    return {
        "recommendations_sent": state["served"],
        "interaction_events_sent": state["events"],
        "events_total": state["served"] + state["events"],
        "recorded": {name: report.served for name, report in reports.items()},
        "click_through": {
            name: [report.click_through.rate, report.click_through.low, report.click_through.high]
            for name, report in reports.items()
        },
        "conversion": {
            name: [report.conversion.rate, report.conversion.low, report.conversion.high]
            for name, report in reports.items()
        },
        "b_vs_a_click_through": vars(b.click_through.versus_control),
        "b_vs_a_conversion": vars(b.conversion.versus_control),
        "unmatched": attribution.unmatched,
    }


def monte_carlo(per_arm: int, trials: int, seed: int) -> dict:
    """The report's test on simulated experiments of `per_arm` recommendations per variant."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(per_arm, RATE_A, size=trials)
    b = rng.binomial(per_arm, RATE_B, size=trials)
    null_b = rng.binomial(per_arm, RATE_A, size=trials)
    better = sum(
        test.p_value < 0.05 and test.difference > 0
        for test in (
            two_proportion_test(int(x), per_arm, int(y), per_arm) for x, y in zip(a, b, strict=True)
        )
    )
    false = sum(
        two_proportion_test(int(x), per_arm, int(y), per_arm).p_value < 0.05
        for x, y in zip(a, null_b, strict=True)
    )
    return {
        "trials": trials,
        "per_arm": per_arm,
        "found_b_better_share": better / trials,
        "equal_variants_significant_share": false / trials,
    }


# ---------------------------------------------------------------- 2: the cost
def inference_calls(port: int) -> tuple[float, float]:
    """The service's onnxruntime calls so far: (rows scored, calls), from its /metrics."""
    values = {s.name: s.value for s in metric_samples(f"http://127.0.0.1:{port}")}
    return values["cosrec_inference_batch_size_sum"], values["cosrec_inference_batch_size_count"]


def measure_cost(services: dict[str, tuple[int, list[bytes]]], args) -> list[dict]:
    """Each round measures every configuration in turn (the order rotates). Throughput: the
    median of each round's ratio to "off" (rounds seconds apart share the machine's noise).
    Latency: the percentiles of every round's requests together, so that a p99 rests on
    hundreds of slow requests rather than a few stalls of one run. Each run also reports the
    rows per onnxruntime call it made, warm-up included (the service's batch histogram): the
    model's cost per row falls as its calls grow (bench/variant_cost.py)."""
    runs: dict[str, list[dict]] = {name: [] for name in services}
    latencies: dict[str, list[np.ndarray]] = {name: [] for name in services}
    names = list(services)
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            port, pool = services[name]
            rows_before, calls_before = inference_calls(port)
            result = run_load(
                port,
                args.concurrency,
                cycling(pool),
                args.warmup,
                args.duration,
                keep_latencies=True,
            )
            latencies[name].append(result.pop("latencies_ms"))
            rows_after, calls_after = inference_calls(port)
            calls = max(calls_after - calls_before, 1)  # none: a broken run, shown as 0 rows
            result["rows_per_inference_call"] = round((rows_after - rows_before) / calls, 1)
            runs[name].append(result)
            print(
                f"  round {repeat + 1} {name:<14} {result['rps']:>8,.0f} req/s  "
                f"p50 {result['p50_ms']:.1f}  p99 {result['p99_ms']:.1f} ms  "
                f"{result['rows_per_inference_call']} rows a call  ({result['errors']} errors)",
                flush=True,
            )
    rows = []
    off_rps = [r["rps"] for r in runs["off"]]
    off_p99 = [r["p99_ms"] for r in runs["off"]]
    pooled = {name: np.concatenate(arrays) for name, arrays in latencies.items()}
    pooled_p99 = {name: float(np.percentile(ms, 99)) for name, ms in pooled.items()}
    for name, results in runs.items():
        rps = [r["rps"] for r in results]
        p99 = [r["p99_ms"] for r in results]
        rows.append(
            {
                "configuration": name,
                "concurrency": args.concurrency,
                "workers": args.workers,
                "rps_median": float(np.median(rps)),
                "p50_ms_median": float(np.median([r["p50_ms"] for r in results])),
                "p99_ms_median": float(np.median(p99)),
                "rps_runs": rps,
                "p99_ms_runs": p99,
                "errors": sum(r["errors"] for r in results),
                "rows_per_inference_call_median": float(
                    np.median([r["rows_per_inference_call"] for r in results])
                ),
                "rps_ratio_to_off_median": round(
                    float(np.median([x / y for x, y in zip(rps, off_rps, strict=True)])), 3
                ),
                "p99_ratio_to_off_median": round(
                    float(np.median([x / y for x, y in zip(p99, off_p99, strict=True)])), 3
                ),
                "requests_pooled": len(pooled[name]),
                "p50_ms_pooled": round(float(np.percentile(pooled[name], 50)), 2),
                "p99_ms_pooled": round(pooled_p99[name], 2),
                "p99_ratio_to_off_pooled": round(pooled_p99[name] / pooled_p99["off"], 3),
            }
        )
    return rows


def run_simulation(url: str, redis_url: str, seed: int) -> dict:
    per_arm = per_arm_sample_size(RATE_A, RATE_B)
    total = 2 * per_arm
    print(
        f"simulated experiment: {per_arm} recommendations per variant ({POWER:.0%} power), "
        f"{total} in all ...",
        flush=True,
    )
    started = time.perf_counter()
    trace = asyncio.run(simulate(url, redis_url, total, seed, checkpoints=10))
    final = trace[-1]
    versus = final["b_vs_a_click_through"]
    first = next(
        (
            point
            for point in trace
            if point["b_vs_a_click_through"]["p_value"] < 0.05
            and point["b_vs_a_click_through"]["difference"] > 0
        ),
        None,
    )
    print(
        json.dumps({k: final[k] for k in ("events_total", "click_through", "b_vs_a_click_through")})
    )
    return {
        "click_rate": {"A": RATE_A, "B": RATE_B},
        "purchase_after_click": PURCHASE_AFTER_CLICK,
        "design": f"fixed horizon: {per_arm} recommendations per variant for {POWER:.0%} power "
        "at the 5% level (two-sided two-proportion z-test), decided once, at the horizon",
        "seconds": round(time.perf_counter() - started, 1),
        "at_horizon": final,
        "b_found_better_at_5_percent": versus["p_value"] < 0.05 and versus["difference"] > 0,
        "events_needed": final["events_total"],
        "first_checkpoint_significant": None
        if first is None
        else {k: first[k] for k in ("events_total", "b_vs_a_click_through")},
        "checkpoints": trace,
        "monte_carlo": monte_carlo(per_arm, 2000, seed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument(
        "--skip-profile", action="store_true", help="no py-spy CPU and GIL budgets of off and on"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn workers of every service (above 1, no profiles: py-spy samples one process)",
    )
    parser.add_argument(
        "--precision", choices=["fp32", "int8"], default="fp32", help="COSREC_PRECISION, all runs"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "experiments.json")
    args = parser.parse_args(argv)
    if args.workers > 1 and not args.skip_profile:
        print(f"--workers {args.workers}: no profiles (py-spy samples one process)", flush=True)
        args.skip_profile = True
    command = " ".join(
        ["python bench/experiments.py", *(argv if argv is not None else sys.argv[1:])]
    )
    result: dict = {
        "command": command,
        "machine": machine(),
        "cpu": describe_cpu(),
        "precision": args.precision,
    }
    work = Path(tempfile.mkdtemp(prefix="cosrec-experiments-"))
    running: list[ServiceProcess] = []
    try:
        print("exporting two ML-1M-sized bundles ...", flush=True)
        bundle_a = export_bundle_ml1m_size(work / "a", seed=0)
        bundle_b = export_bundle_ml1m_size(work / "b", seed=1)
        catalogue = work / "catalogue.jsonl"
        result["catalogue"] = write_catalogue(catalogue)
        with redis_server(work) as redis_url:
            base = {"ready_route": "/readyz", "reload_poll_s": "0", "precision": args.precision}
            start = partial(ServiceProcess.start, workers=args.workers)
            off = start(bundle_a, redis_url, **base)
            running.append(off)
            result["histories"] = load_histories(off.port, redis_url)
            # "on" is its rules and its experiment together; each alone is measured beside it
            rules = {"catalogue": str(catalogue)}
            variants = {"variants": f"B={bundle_b}:0.5", "experiment_salt": f"bench-{args.seed}"}
            on = {**rules, **variants}
            with_rules = start(bundle_a, redis_url, **base, **on)
            running.append(with_rules)
            if not args.skip_cost:  # services that only the cost runs use
                shadowed = start(
                    bundle_a,
                    redis_url,
                    **base,
                    **on,
                    shadow_bundle=str(bundle_b),
                    shadow_sample="0.1",
                )
                rules_only = start(bundle_a, redis_url, **base, **rules)
                variants_only = start(
                    bundle_a, redis_url, **base, **variants, record_recommendations="false"
                )
                record_only = start(bundle_a, redis_url, **base, record_recommendations="true")
                running += [shadowed, rules_only, variants_only, record_only]
            time.sleep(1.0)
            # the simulation first: the cost runs record their answers too, with no clicks
            if not args.skip_simulation:
                result["simulation"] = run_simulation(with_rules.url, redis_url, args.seed)
            if not args.skip_cost:
                print(f"cost at c={args.concurrency}, {args.repeats} rounds:", flush=True)
                services = {
                    "off": (off.port, recommend_pool(None, 2)),
                    "on": (with_rules.port, recommend_pool(FILTERS, 2)),
                    "on+shadow10%": (shadowed.port, recommend_pool(FILTERS, 2)),
                    "rules only": (rules_only.port, recommend_pool(FILTERS, 2)),
                    "variants only": (variants_only.port, recommend_pool(None, 2)),
                    "record only": (record_only.port, recommend_pool(None, 2)),
                }
                result["cost"] = {
                    "off": "one bundle, no catalogue, no record; requests {user_id, n: 10}",
                    "on": f"{result['catalogue']['items']}-item catalogue, variants A and B "
                    f"(50/50), every answer recorded, requests with {FILTERS} and the default "
                    "only_available",
                    "on+shadow10%": "on, plus a shadow bundle scoring 10% of requests",
                    "rules only": "off, plus the catalogue and the requests' filters",
                    "variants only": "off, plus variant B (50/50), answers not recorded",
                    "record only": "off, plus the record of every answer",
                    "method": f"{args.repeats} rounds, each configuration in turn (the order "
                    f"rotating) for {args.warmup:g} s of warm-up and {args.duration:g} s "
                    "measured; rps_ratio_to_off_median: the median of the rounds' ratios (not "
                    "the ratio of the rps medians); *_pooled: percentiles of all rounds' "
                    "requests together; p99_*_median: the median of the rounds' own p99, a few "
                    "stalls each (noisier)",
                    "rows": measure_cost(services, args),
                }
            if not args.skip_profile:  # where the difference goes: wrk + py-spy, as profile_serve
                fields = "," + json.dumps(FILTERS)[1:-1]
                targets = [
                    (off, "off", recommend_script()),
                    (with_rules, "on", recommend_script(fields)),
                ]
                # the CPU of every thread, then the GIL's holder alone
                for key, gil in (("cost_cpu_budget", False), ("cost_gil_budget", True)):
                    result[key] = [
                        profile(target.port, target.process.pid, label, lua, 10, work, gil=gil)
                        for target, label, lua in targets
                    ]
    finally:
        for service in running:
            service.stop()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
