"""`cosrec demo`: the whole system on one machine, from data to a served recommendation.

Generates a small interaction log with real sequential structure (or takes `--data FILE`),
trains CosRec on it, exports the bundle, starts Redis unless one is reachable, starts the
service, sends a few events and recommendation requests through real HTTP, prints them, and
leaves the service running until Ctrl-C; then it stops what it started. `--no-wait` exits
after the requests (used by the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contract.bundle import MANIFEST_FILE, Manifest, parse_manifest
from cosrec.commands.common import CommandParser, UsageError, run_command
from cosrec.processes import RedisProcess, ServiceProcess, free_port, redis_reachable

DEFAULT_WORKDIR = Path(".demo")
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
HISTORY_SHOWN = 5  # events the demo sends for its sample user


def _parser() -> CommandParser:
    parser = CommandParser(
        prog="cosrec demo", description="train on generated data (or --data) and serve it"
    )
    parser.add_argument("--data", type=Path, help="your interaction log instead of generated data")
    parser.add_argument("--format", default="csv", help="format of --data (default: csv)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default: 5)")
    # The generated log: big enough to learn its structure in a few epochs on a CPU.
    parser.add_argument("--users", type=int, default=300, help="users of the generated log")
    parser.add_argument("--items", type=int, default=120, help="items of the generated log")
    parser.add_argument("--port", type=int, default=8000, help="service port (0: any free port)")
    parser.add_argument(
        "--redis-url", help=f"Redis to use (default: {DEFAULT_REDIS_URL} if reachable, else own)"
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="for demo files")
    parser.add_argument(
        "--no-wait", action="store_true", help="exit after the sample requests (for tests)"
    )
    return parser


def demo_main(argv: list[str]) -> int:
    parser = _parser()

    def body() -> int:
        try:
            return _run(parser.parse_args(argv))
        except KeyboardInterrupt:
            print("\ncosrec demo: stopped")
            return 0

    return run_command(parser.prog, body)


def _run(args: argparse.Namespace) -> int:
    if min(args.epochs, args.users, args.items) < 1:
        raise UsageError("--epochs, --users and --items must be positive")
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        data = _generate_log(workdir / "synthetic-log.csv", args.users, args.items)
        data_format = "csv"
    else:
        if not args.data.is_file():
            raise UsageError(f"--data {args.data}: no such file")
        data, data_format = args.data, args.format

    bundle = workdir / "bundle"
    _step(f"training CosRec on {data} ({args.epochs} epochs)")
    _train(data, data_format, bundle, args.epochs)
    manifest = parse_manifest((bundle / MANIFEST_FILE).read_bytes())

    with contextlib.ExitStack() as stack:
        # SIGTERM ends the demo like Ctrl-C, so what it started is stopped either way.
        previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        stack.callback(signal.signal, signal.SIGTERM, previous_handler)
        redis_url = args.redis_url or _reachable_redis() or stack.enter_context(_own_redis(workdir))
        service = _start_service(bundle, redis_url, _pick_port(args.port), workdir)
        stack.callback(service.stop)
        base_url = service.url
        _step(f"service ready at {base_url} (Redis: {redis_url})")
        user, history = _sample_history(data, data_format)
        _show_requests(base_url, user, history, manifest)
        if args.no_wait:
            return 0
        _print_try_it(base_url, user, history)
        print("Ctrl-C stops the service and everything the demo started.", flush=True)
        while True:
            time.sleep(3600)


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def _generate_log(path: Path, num_users: int, num_items: int) -> Path:
    from training.synthetic import generate_log, write_log_csv

    _step(f"generating an interaction log: {num_users} users, {num_items} items")
    write_log_csv(generate_log(num_users=num_users, num_items=num_items), path)
    return path


def _train(data: Path, data_format: str, bundle: Path, epochs: int) -> None:
    from cosrec.commands.train import train_main

    argv = ["--data", str(data), "--format", data_format, "--out", str(bundle)]
    if train_main([*argv, "--epochs", str(epochs)]) != 0:
        raise UsageError("training failed (see the message above)")


def _sample_history(data: Path, data_format: str) -> tuple[str, list[str]]:
    """The first user of the log and their last few items: a realistic session to replay."""
    from training.readers import read_interactions

    seqs = read_interactions(data, data_format)
    sequence = seqs.sequences[0][-HISTORY_SHOWN:]
    return seqs.users.ids[0], [seqs.items.external(int(index)) for index in sequence]


# --- Redis and the service ------------------------------------------------------------------


def _reachable_redis() -> str | None:
    return DEFAULT_REDIS_URL if redis_reachable(DEFAULT_REDIS_URL) else None


@contextlib.contextmanager
def _own_redis(workdir: Path) -> Iterator[str]:
    try:
        server = RedisProcess(free_port(), workdir / "redis").start()
    except FileNotFoundError as error:
        raise UsageError(f"no Redis reachable and {error}") from None
    try:
        _step(f"started redis-server on port {server.port} (stopped when the demo ends)")
        yield server.url
    finally:
        server.stop()


def _start_service(bundle: Path, redis_url: str, port: int, workdir: Path) -> ServiceProcess:
    _step("starting the service")
    log_path = workdir / "service.log"
    try:
        return ServiceProcess.start(
            bundle, redis_url, port=port, log_path=log_path, log_level="info", ready_route="/readyz"
        )
    except (RuntimeError, TimeoutError) as error:
        raise UsageError(f"the service did not start ({error}; see {log_path})") from None


def _pick_port(wanted: int) -> int:
    if wanted == 0:
        return free_port()
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
        except OSError:
            port = free_port()
            print(f"port {wanted} is taken; using {port}")
            return port
    return wanted


# --- sample traffic ----------------------------------------------------------------------


def _post(url: str, body: dict) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    key = os.environ.get("COSREC_API_KEY")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _exchange(base_url: str, route: str, body: dict) -> Any:
    print(f"\nPOST {route} {json.dumps(body)}")
    status, answer = _post(base_url + route, body)
    print(f"<- {status} {json.dumps(answer)}", flush=True)
    if status != 200:
        raise UsageError(f"POST {route} answered {status}")
    return answer


def _show_requests(base_url: str, user: str, history: list[str], manifest: Manifest) -> None:
    _step(f"replaying the last {len(history)} events of user {user!r}, then asking for items")
    start = int(time.time()) - 60 * len(history)
    events = [
        {"user_id": user, "item_id": item, "timestamp": start + 60 * k, "event_id": f"demo-{k}"}
        for k, item in enumerate(history)
    ]
    _exchange(base_url, "/events", {"events": events})
    _exchange(base_url, "/recommend", {"user_id": user, "n": 5})
    _step("a user with no history gets the popularity ranking")
    _exchange(base_url, "/recommend", {"user_id": "someone-new", "n": 5})
    data = manifest.training_data
    print(
        f"\nmodel {manifest.model_version}: trained on {data.num_users} users, "
        f"{data.num_items} items, {data.num_interactions} interactions"
    )
    for protocol, figures in manifest.metrics.items():
        if isinstance(figures, dict) and "map" in figures:
            print(f"  test MAP ({protocol}): {figures['map']:.4f}")


def _print_try_it(base_url: str, user: str, history: list[str]) -> None:
    json_header = "-H 'Content-Type: application/json'"
    event = json.dumps({"events": [{"user_id": "alice", "item_id": history[-1]}]})
    recommend = json.dumps({"user_id": "alice", "n": 5})
    print(
        f"""
Try it (the service keeps running):
  curl -s {base_url}/events {json_header} -d '{event}'
  curl -s {base_url}/recommend {json_header} -d '{recommend}'
  curl -s {base_url}/recommend {json_header} -d '{json.dumps({"user_id": user, "n": 10})}'
  curl -s {base_url}/metrics | grep ^cosrec_
  API docs: {base_url}/docs
"""
    )
