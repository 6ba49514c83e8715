"""Offline equals online: a bundle evaluated offline (training.scoring.bundle_scorer, what
`cosrec evaluate --bundle` runs) and the running service's /recommend give the same top-N for
the same users and histories, including users and items the bundle has never seen; for both of
the bundle's graphs (COSREC_PRECISION fp32 and int8, `--precision`)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from contract.bundle import load_bundle
from contract.ids import Vocabulary
from cosrec.processes import ServiceProcess
from training.scoring import bundle_scorer

N = 10
UNKNOWN_ITEMS = ("brand-new-1", "brand-new-2", "brand-new-3")


def offline_top_n(bundle_dir, user_ids, histories, precision="fp32"):
    """Top-N ids per user: every item scored from the history, the history's items left out,
    ranked by score, ties by item index (the evaluation's ranking)."""
    bundle = load_bundle(bundle_dir, precision=precision)
    items = Vocabulary((*bundle.manifest.items, *UNKNOWN_ITEMS))
    users = Vocabulary(tuple(user_ids))
    score = bundle_scorer(bundle, users, items)
    indexed = [np.array([items.index(i) for i in history], dtype=np.int64) for history in histories]
    scores = score(np.arange(1, len(user_ids) + 1, dtype=np.int64), indexed).numpy()
    answers = []
    for row, history in zip(scores, indexed, strict=True):
        row[history] = -np.inf  # the user's own items
        row[0] = -np.inf  # padding
        order = np.argsort(-row, kind="stable")[:N]
        answers.append(([items.external(int(i)) for i in order], row[order].tolist()))
    return answers


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_offline_evaluation_and_the_service_rank_the_same_items(bundle_dir, redis_url, precision):
    live_service = ServiceProcess.start(bundle_dir, redis_url, precision=precision)
    try:
        check_offline_equals_online(live_service, bundle_dir, precision)
    finally:
        live_service.stop()


def check_offline_equals_online(live_service, bundle_dir, precision):
    ready = httpx.get(f"{live_service.url}/readyz").json()
    assert ready["precision"] == precision
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    known_items = manifest["items"]
    rng = np.random.default_rng(11)
    user_ids = [*manifest["users"][:6], "never-trained-1", "never-trained-2"]
    histories = []
    for k in range(len(user_ids)):
        history = list(rng.choice(known_items, size=int(rng.integers(3, 12)), replace=False))
        for unknown in UNKNOWN_ITEMS[: k % 4]:  # 0 to 3 unknown items, anywhere in the history
            history.insert(int(rng.integers(0, len(history) + 1)), unknown)
        histories.append(history)
    assert any(set(h) & set(UNKNOWN_ITEMS) for h in histories)

    events = [
        {
            "user_id": user,
            "item_id": item,
            "timestamp": 1_700_000_000 + t,
            "event_id": f"{user}-{t}",
        }
        for user, history in zip(user_ids, histories, strict=True)
        for t, item in enumerate(history)
    ]
    stored = httpx.post(f"{live_service.url}/events", json={"events": events})
    assert stored.status_code == 200, stored.text
    online = []
    for user in user_ids:
        reply = httpx.post(f"{live_service.url}/recommend", json={"user_id": user, "n": N})
        assert reply.status_code == 200, reply.text
        assert reply.json()["source"] == "model"
        online.append(reply.json()["items"])

    offline = offline_top_n(bundle_dir, user_ids, histories, precision)
    for user, (ids, scores), answer in zip(user_ids, offline, online, strict=True):
        assert [item["item_id"] for item in answer] == ids, user
        np.testing.assert_allclose([item["score"] for item in answer], scores, rtol=1e-6)
    if precision == "int8":  # the service read the int8 graph, not the float one
        float_scores = [scores for _, scores in offline_top_n(bundle_dir, user_ids, histories)]
        assert not np.allclose([scores for _, scores in offline], float_scores, rtol=1e-6)
