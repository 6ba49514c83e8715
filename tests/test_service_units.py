"""Pieces of the service on their own: top-n, key layout, the batcher, imports, the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, free_port, service_env
from service.batching import GreedyBatcher
from service.keys import user_from_log_key, user_from_tag, user_keys, user_tag
from service.recommender import top_n


@pytest.mark.parametrize("n", [1, 5, 50, 200])
def test_top_n_equals_a_full_sort_without_the_excluded(n):
    rng = np.random.default_rng(n)
    scores = rng.normal(size=100).astype(np.float32)
    excluded = rng.choice(100, size=30, replace=False)
    reference = [c for c in np.argsort(-scores, kind="stable") if c not in set(excluded)][:n]
    assert top_n(scores.copy(), n, excluded).tolist() == reference


def test_top_n_with_everything_excluded_is_empty():
    assert len(top_n(np.ones(4, dtype=np.float32), 3, np.array([0, 1, 2, 3, 3]))) == 0


@pytest.mark.parametrize(
    "user", ["u1", "", "a}b", "{u:00}", "x:y:log", "ü\u0000\U0001f600", "cosrec:{u:75}:seq"]
)
def test_user_keys_stay_in_their_tag_and_prefix(user):
    keys = user_keys("cosrec", user).all()
    tag = user_tag(user)
    for key in keys:
        assert key.startswith(f"cosrec:{tag}:")
        # Redis Cluster hashes what lies between the first '{' and the next '}'
        assert key[key.index("{") + 1 : key.index("}")] == tag[1:-1]
    assert user_from_tag(tag) == user
    assert user_from_log_key("cosrec", user_keys("cosrec", user).log) == user


def test_different_users_never_share_a_key():
    users = ["a", "a:", "a}", "{a}", "a:seq", "6", "36", "é", "e\u0301"]
    keys = [key for user in users for key in user_keys("cosrec", user).all()]
    assert len(keys) == len(set(keys))


def test_batcher_batches_what_queued_and_shares_failures():
    sizes: list[int] = []

    async def double(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        await asyncio.sleep(0.01)
        if 13 in batch:
            raise ValueError("thirteen")
        return [2 * x for x in batch]

    async def scenario() -> tuple[list[int], BaseException | None]:
        batcher = GreedyBatcher(double, max_batch=4)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(x) for x in range(10)))
        failed = await asyncio.gather(batcher.submit(13), batcher.submit(1), return_exceptions=True)
        await batcher.stop()
        return results, failed[1]

    results, neighbour = asyncio.run(scenario())
    assert results == [2 * x for x in range(10)]
    assert max(sizes) == 4
    assert len(sizes) < 10
    assert isinstance(neighbour, ValueError)


def test_the_service_imports_no_torch_and_no_training_code():
    code = (
        "import sys, service.app, service.cli, service.event_log\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'model', 'training')]\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def run_serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cosrec", "serve", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_without_reachable_redis_says_so_and_exits_2(main_bundle):
    env = service_env(main_bundle, "unused")
    del env["COSREC_REDIS_URL"]
    result = run_serve([], env)
    if result.returncode == 0 or "no Redis URL" not in result.stderr:
        pytest.skip("a Redis answers on localhost:6379 here")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_bad_bundle_and_bad_flags_in_one_line(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["format_version"] = 9
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    env = service_env(bundle_dir, f"redis://127.0.0.1:{free_port()}/0")
    for args, message in [
        ([], "format_version 9"),
        (["--port", "many"], "--port"),
        (["--workers", "0"], "workers"),
        (["--bundle", str(bundle_dir / "nowhere")], "nowhere"),
    ]:
        result = run_serve(args, env)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
        assert message in result.stderr
