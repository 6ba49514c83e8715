"""Shared fixtures: a real redis-server, real bundles exported from really trained small
models, the app in-process and the service as a real uvicorn process."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cosrec.processes import RedisProcess, ServiceProcess, free_port

REPO = Path(__file__).resolve().parents[1]
SMALL_COSREC = {"d": 8, "block_channels": (8, 16), "fc_dim": 12}


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
    try:
        server = RedisProcess(free_port(), tmp_path_factory.mktemp("redis")).start()
    except FileNotFoundError as error:
        pytest.skip(str(error))
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


def export_small_bundle(
    out_dir: Path, *, seed: int, L: int = 5, epochs: int = 2, num_items: int = 30
) -> Path:
    """Train a small CosRec on generated data (`epochs=0`: random weights) and export it."""
    import torch

    from model import build_model
    from training.export import export_bundle
    from training.fit import TrainConfig, fit
    from training.synthetic import generate_log

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = generate_log(num_users=40, num_items=num_items, length_range=(8, 16), seed=0)
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


@pytest.fixture(scope="session")
def wider_bundle(tmp_path_factory) -> Path:
    """A valid model over a catalogue of one more item (i31) than the main bundle's."""
    directory = tmp_path_factory.mktemp("bundles") / "wider"
    return export_small_bundle(directory, seed=4, epochs=0, num_items=31)


@pytest.fixture
def bundle_dir(main_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the main bundle that a test may overwrite."""
    target = tmp_path / "bundle"
    shutil.copytree(main_bundle, target)
    return target


@pytest.fixture
def live_service(bundle_dir: Path, redis_url: str) -> Iterator[ServiceProcess]:
    service = ServiceProcess.start(bundle_dir, redis_url, reload_poll_s="0.2")
    yield service
    service.stop()


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
