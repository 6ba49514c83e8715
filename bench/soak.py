"""Bounded soak: a steady rate of mixed events and recommendations against a real service.

Starts its own redis-server (append-only file, fsync on every write) and `cosrec serve` on
loopback, with an ML-1M-sized bundle (random weights, as in bench/serve.py) unless --bundle is
given, then sends --rate requests per second for --duration seconds, half POST /events (one
event each, a fresh event_id, one of the bundle's users) and half POST /recommend, on an open
loop: each request leaves at its scheduled time whatever the answers before it did, and its
latency counts from that time (no coordinated omission). Stops by itself, then reports
throughput, p50/p99 latency, errors (anything but a 200: must be 0) and the service's resident
memory (all its processes) after the warm-up and at the end (growth must stay under 10%).
Results go to bench/results/soak.json; the exit status is 1 when errors or growth fail.

    .venv/bin/python bench/soak.py [--duration 600] [--rate 200] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serve import http_post  # noqa: E402  (bench/serve.py, beside this script)

from cosrec.processes import DurableRedis, ServiceProcess, free_port, tree_rss_mb  # noqa: E402

MAX_RSS_GROWTH = 0.10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds before the start RSS (default: 10%% of the duration, 5 to 60 s)",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    parser.add_argument("--bundle", type=Path, help="serve this bundle (default: ML-1M-sized)")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0:
        parser.error("--duration and --rate must be positive")
    if args.warmup is None:
        args.warmup = min(60.0, max(5.0, args.duration / 10))
    return args


class Connections:
    """Keep-alive HTTP/1.1 connections to the service, opened as needed (a raw client: httpx
    costs more CPU per request than the service itself on this kind of machine)."""

    # uvicorn closes a keep-alive connection idle for 5 s: never reuse one idle that long
    MAX_IDLE_S = 4.0

    def __init__(self, port: int) -> None:
        self.port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def post(self, path: str, body: dict) -> int:
        """The status code of one POST; the connection goes back to the pool after it."""
        reader, writer = await self._take()
        try:
            writer.write(http_post(path, orjson.dumps(body)))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer, time.monotonic()))
        return int(head[9:12])

    async def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer, idle_since = self._idle.pop()
            if time.monotonic() - idle_since < self.MAX_IDLE_S and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()


class SteadyLoad:
    """Open-loop mixed traffic: request k leaves at start + k / rate."""

    def __init__(self, port: int, users: list[str], items: list[str], rate: float) -> None:
        self.connections = Connections(port)
        self.users = users
        self.items = items
        self.rate = rate
        self.latencies_s: list[float] = []
        self.errors: dict[str, int] = {}
        self._chooser = random.Random(0)

    async def run(self, duration_s: float, max_in_flight: int) -> float:
        """Send for duration_s; returns the seconds from the first send to the last answer."""
        gate = asyncio.Semaphore(max_in_flight)
        started = time.perf_counter()
        tasks: set[asyncio.Task] = set()
        for k in itertools.count():
            due = started + k / self.rate
            if due - started >= duration_s:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await gate.acquire()
            task = asyncio.create_task(self._one(k, due))
            task.add_done_callback(lambda _: gate.release())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        self.connections.close()
        return time.perf_counter() - started

    async def _one(self, k: int, due: float) -> None:
        user = self._chooser.choice(self.users)
        if k % 2 == 0:
            event = {
                "user_id": user,
                "item_id": self._chooser.choice(self.items),
                "event_id": f"soak-{k}",
            }
            route, body = "/events", {"events": [event]}
        else:
            route, body = "/recommend", {"user_id": user, "n": 10}
        try:
            outcome = str(await asyncio.wait_for(self.connections.post(route, body), 30))
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            outcome = type(error).__name__
        self.latencies_s.append(time.perf_counter() - due)
        if outcome != "200":
            key = f"{route} {outcome}"
            self.errors[key] = self.errors.get(key, 0) + 1


def ml1m_sized_bundle(directory: Path) -> Path:
    from serve import export_bundle_ml1m_size  # imports torch: only when no --bundle is given

    return export_bundle_ml1m_size(directory / "bundle")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "bench/soak.py", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="cosrec-soak-") as scratch:
        work = Path(scratch)
        bundle = args.bundle or ml1m_sized_bundle(work)
        manifest = json.loads((bundle / "manifest.json").read_text())
        (work / "redis").mkdir()
        redis_server = DurableRedis(free_port(), work / "redis")
        redis_server.start()
        service = None
        try:
            service = ServiceProcess.start(
                bundle,
                redis_server.url,
                log_path=work / "service.log",
                ready_route="/readyz",
                workers=args.workers,
                reload_poll_s="0",
            )
            port = int(service.url.rsplit(":", 1)[1])
            load = SteadyLoad(port, manifest["users"], manifest["items"], args.rate)
            result = _event_loop_runner()(_measure(load, args, service.process.pid, redis_server))
        finally:
            if service is not None:
                service.stop()
            redis_server.crash()
    result["command"] = command
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    growth = result["rss_end_mb"] / result["rss_start_mb"] - 1
    ok = result["errors"] == 0 and growth < MAX_RSS_GROWTH
    if not ok:
        print(f"soak FAILED: {result['errors']} errors, RSS growth {growth:.1%}", file=sys.stderr)
    return 0 if ok else 1


def _event_loop_runner():
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


async def _measure(load: SteadyLoad, args, service_pid: int, redis_server: DurableRedis) -> dict:
    async def rss_after_warmup() -> float:
        await asyncio.sleep(args.warmup)
        return tree_rss_mb(service_pid)

    redis_client = redis_server.client()
    redis_start_mb = redis_client.info("memory")["used_memory"] / 2**20
    rss_probe = asyncio.create_task(rss_after_warmup())
    elapsed = await load.run(args.duration, args.max_in_flight)
    rss_end = tree_rss_mb(service_pid)
    rss_start = await rss_probe
    redis_end_mb = redis_client.info("memory")["used_memory"] / 2**20
    redis_client.close()
    ms = np.asarray(load.latencies_s) * 1000
    return {
        "duration_s": round(elapsed, 1),
        "requests": len(load.latencies_s),
        "errors": sum(load.errors.values()),
        "errors_by_kind": load.errors,
        "rps": round(len(load.latencies_s) / elapsed, 1),
        "target_rps": args.rate,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_measured_after_warmup_s": args.warmup,
        "redis_used_memory_start_mb": round(redis_start_mb, 1),
        "redis_used_memory_end_mb": round(redis_end_mb, 1),
        "workers": args.workers,
        "items": len(load.items),
        "users": len(load.users),
    }


if __name__ == "__main__":
    sys.exit(main())
