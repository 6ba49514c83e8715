"""Pieces of the service on their own: top-n, key layout, the batcher, imports, the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from contract.redis_layout import user_from_log_key, user_from_tag, user_keys, user_tag
from cosrec.processes import free_port, service_env
from service.batching import ClientGoneError, GreedyBatcher, QueueFullError
from service.ranking import (
    SAMPLE_STRIDE,
    Exclusions,
    exclusions,
    ranked_candidates,
    top_n_rows,
)


def test_top_n_rows_equal_a_full_sort_of_each_row_without_its_excluded():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 100)).astype(np.float32)
    scores[1, 10:20] = 0.5  # ties: kept in column order, as a stable full sort keeps them
    n = np.array([1, 5, 50, 200])
    excluded_per_row = [rng.choice(100, size=30, replace=False) for _ in range(4)]
    excluded = Exclusions(
        np.repeat(np.arange(4), 30), np.concatenate(excluded_per_row).astype(np.intp)
    )
    ranked = top_n_rows(scores.copy(), n, excluded)
    for row in range(4):
        skip = set(excluded_per_row[row].tolist())
        reference = [c for c in np.argsort(-scores[row], kind="stable") if c not in skip]
        count = ranked.counts[row]
        assert count == min(n[row], 70)
        assert ranked.columns[row, :count].tolist() == reference[: n[row]]
        assert ranked.scores[row, :count].tolist() == scores[row, reference[: n[row]]].tolist()


@pytest.mark.parametrize("seed", range(20))
def test_ranked_candidates_start_each_row_as_a_stable_full_sort_does(seed):
    """Exact whatever the sample draws: heavy ties (integer scores), rows mostly -inf, rows
    with no finite cell, k from 1 to past the width."""
    rng = np.random.default_rng(seed)
    rows, width = int(rng.integers(1, 12)), int(rng.integers(1, 300))
    scores = rng.integers(-5, 6, size=(rows, width)).astype(np.float32)
    if seed % 2:
        scores += rng.normal(size=(rows, width)).astype(np.float32)
    for row in range(rows):
        scores[row, rng.random(width) < rng.choice([0.0, 0.5, 0.97, 1.0])] = -np.inf
    k = int(rng.integers(1, width + 5))
    candidates = ranked_candidates(scores, k)
    for row in range(rows):
        finite = int(np.count_nonzero(scores[row] > -np.inf))
        reference = np.argsort(-scores[row], kind="stable")[:finite]
        got = candidates.columns[candidates.starts[row] : candidates.starts[row + 1]]
        assert len(got) >= min(k, finite)
        assert got.tolist() == reference[: len(got)].tolist()
        if candidates.complete[row]:
            assert len(got) == finite
        else:
            assert len(got) >= k


def test_an_unlucky_sample_cuts_its_row_at_the_kth_best_cell_not_at_the_whole_row():
    """The sample (every SAMPLE_STRIDE-th cell) holds a row's best scores, so too few cells
    pass its threshold: the row then keeps its k best, exactly, not every cell."""
    width, k = 400, 42
    scores = np.arange(width, dtype=np.float32)[None, ::-1].copy()  # 399 ... 0
    scores[0, ::SAMPLE_STRIDE] += 1000.0  # the sampled cells are the row's best
    candidates = ranked_candidates(scores, k)
    assert candidates.counts().tolist() == [k]
    assert candidates.columns.tolist() == np.argsort(-scores[0], kind="stable")[:k].tolist()
    assert not candidates.complete[0]


def test_a_row_with_nan_scores_keeps_its_k_best_finite_cells():
    """NaN (a broken model's score) is never a candidate, nor a threshold that hides the rest."""
    width, k = 400, 42
    scores = np.arange(width, dtype=np.float32)[None, ::-1].copy()
    scores[0, ::SAMPLE_STRIDE] = np.nan  # every sampled cell
    candidates = ranked_candidates(scores, k)
    finite = np.flatnonzero(~np.isnan(scores[0]))
    best = finite[np.argsort(-scores[0, finite], kind="stable")][:k]
    assert candidates.columns.tolist() == best.tolist()
    assert not candidates.complete[0]


def test_top_n_rows_with_everything_excluded_is_empty():
    scores = np.array([[1, 1, 1, 1], [4, 3, 2, 1]], dtype=np.float32)
    excluded = Exclusions(np.array([0, 0, 0, 0, 0]), np.array([0, 1, 2, 3, 3]))
    ranked = top_n_rows(scores, np.array([3, 3]), excluded)
    assert ranked.counts.tolist() == [0, 3]
    assert ranked.columns[1, :3].tolist() == [0, 1, 2]


def test_exclusions_keep_known_ids_of_each_row_as_columns():
    index = {b"a": 1, b"b": 2, b"c": 3}
    excluded = exclusions(index, [[b"c", b"zz"], [], [b"a", b"b", b"a"]])
    assert excluded.rows.tolist() == [0, 2, 2, 2]
    assert excluded.columns.tolist() == [2, 0, 1, 0]


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


@pytest.mark.parametrize("in_flight", [1, 2])
def test_batcher_runs_at_most_max_in_flight_batches_at_once(in_flight):
    running, most = 0, 0

    async def slow(batch: list[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return batch

    async def scenario() -> list[int]:
        batcher = GreedyBatcher(slow, max_batch=1, max_in_flight=in_flight)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(x) for x in range(6)))
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == list(range(6))
    assert most == in_flight


@pytest.mark.parametrize("turns", [0, 1, 2, 3, 5])
def test_batcher_stop_answers_every_waiter_whenever_it_comes(turns):
    """stop() after `turns` event-loop turns: before the batch task exists, before it has
    started, or while it waits inside `process`: no submitter is left waiting."""

    async def never(batch: list[int]) -> list[int]:
        await asyncio.Event().wait()
        return batch

    async def scenario() -> list[BaseException]:
        batcher = GreedyBatcher(never, max_batch=2, max_in_flight=2)
        batcher.start()
        waiters = [asyncio.ensure_future(batcher.submit(x)) for x in range(5)]
        for _ in range(turns):
            await asyncio.sleep(0)
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 2)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes


def test_the_service_imports_no_torch_and_no_training_code():
    code = (
        "import sys, service.app, cosrec.commands.serve, contract.event_log\n"
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


def test_serve_refuses_int8_on_cuda_and_an_int8_graph_it_cannot_read(bundle_dir):
    env = service_env(bundle_dir, f"redis://127.0.0.1:{free_port()}/0", precision="int8")
    result = run_serve([], {**env, "COSREC_DEVICE": "cuda"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "precision int8 runs on the CPU" in result.stderr

    (bundle_dir / "model.int8.onnx").unlink()
    result = run_serve([], env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "model.int8.onnx" in result.stderr


def test_batcher_refuses_beyond_its_queue_bound_at_once():
    async def scenario() -> list[int]:
        batcher = GreedyBatcher(_echo, max_batch=2, max_queue=3)  # not started: nothing drains
        accepted = [batcher.submit(x) for x in range(3)]
        with pytest.raises(QueueFullError):
            batcher.submit(3)
        batcher.start()
        done = await asyncio.gather(*accepted)
        batcher.submit(4)  # room again once the queue drained
        await batcher.stop()
        return done

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_batcher_bounds_a_batch_by_weight_and_keeps_an_oversized_item_alone():
    batches: list[list[int]] = []

    async def record(batch: list[int]) -> list[int]:
        batches.append(batch)
        return batch

    async def scenario() -> None:
        batcher = GreedyBatcher(record, max_batch=100, weight=lambda x: x, max_weight=10)
        waiting = [batcher.submit(x) for x in (4, 5, 3, 12, 2, 2)]
        batcher.start()
        await asyncio.gather(*waiting)
        await batcher.stop()

    asyncio.run(scenario())
    assert batches == [[4, 5], [3], [12], [2, 2]]


def test_batcher_with_groups_batches_the_oldest_waiters_group_and_keeps_the_others_order():
    batches: list[list[str]] = []

    async def record(batch: list[str]) -> list[str]:
        batches.append(batch)
        return batch

    async def scenario() -> list[str]:
        batcher = GreedyBatcher(record, max_batch=3, group=lambda item: item[0])
        waiting = [batcher.submit(x) for x in ("a1", "b1", "a2", "b2", "a3", "a4", "b3")]
        batcher.start()
        answers = await asyncio.gather(*waiting)
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    assert answers == ["a1", "b1", "a2", "b2", "a3", "a4", "b3"]
    assert batches == [["a1", "a2", "a3"], ["b1", "b2", "b3"], ["a4"]]


def test_batcher_drops_work_whose_caller_stopped_waiting_or_whose_client_left():
    processed: list[int] = []

    async def record(batch: list[int]) -> list[int]:
        processed.extend(batch)
        return batch

    async def scenario() -> BaseException | None:
        batcher = GreedyBatcher(record, max_batch=10)
        abandoned = batcher.submit(1)
        gone = batcher.submit(2, gone=lambda: True)
        kept = batcher.submit(3)
        abandoned.cancel()  # e.g. its deadline passed while it waited
        batcher.start()
        assert await kept == 3
        error = await asyncio.gather(gone, return_exceptions=True)
        await batcher.stop()
        return error[0]

    assert isinstance(asyncio.run(scenario()), ClientGoneError)
    assert processed == [3]


async def _echo(batch: list[int]) -> list[int]:
    return batch
