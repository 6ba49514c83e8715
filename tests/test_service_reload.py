"""Hot reload: a verified bundle is swapped in; a bad one is refused and the old one serves."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest


def version(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["model_version"]


def publish(source: Path, target: Path) -> None:
    """Replace a bundle directory the way export does: build beside it, then rename."""
    staging = target.with_name(target.name + ".new")
    shutil.copytree(source, staging)
    retired = target.with_name(target.name + ".old")
    target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired)


def edit_manifest(bundle: Path, **changes) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_reload_swaps_in_a_new_bundle(client, bundle_dir, other_bundle):
    old = version(bundle_dir)
    publish(other_bundle, bundle_dir)
    response = client.post("/admin/reload")
    assert response.status_code == 200
    assert response.json() == {"reloaded": True, "model_version": version(other_bundle)}
    assert version(other_bundle) != old
    body = client.post("/recommend", json={"user_id": "u1"}).json()
    assert body["model_version"] == version(other_bundle)


def truncate_onnx(bundle: Path) -> None:
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (truncate_onnx, "sha256"),
        (lambda b: edit_manifest(b, onnx_sha256="0" * 64), "model_version"),
        (lambda b: edit_manifest(b, format_version=3), "format_version"),
        (lambda b: (b / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda b: (b / "model.onnx").unlink(), "model.onnx"),
    ],
    ids=["truncated-onnx", "wrong-sha256", "format-version", "bad-json", "no-onnx"],
)
def test_a_bad_bundle_is_refused_and_the_old_one_serves(client, bundle_dir, spoil, reason):
    old = version(bundle_dir)
    spoil(bundle_dir)
    response = client.post("/admin/reload")
    assert response.status_code == 409
    assert response.json()["reloaded"] is False
    assert response.json()["model_version"] == old
    assert reason in response.json()["error"]
    body = client.post("/recommend", json={"user_id": "u1"})
    assert body.status_code == 200
    assert body.json()["model_version"] == old


def test_a_bundle_with_another_sequence_length_is_refused(client, bundle_dir, long_bundle):
    old = version(bundle_dir)
    publish(long_bundle, bundle_dir)
    response = client.post("/admin/reload").json()
    assert response["reloaded"] is False
    assert "sequence_length 6" in response["error"]
    assert client.post("/recommend", json={"user_id": "u1"}).json()["model_version"] == old


def test_the_watcher_reloads_a_changed_bundle(make_client, bundle_dir, other_bundle):
    client = make_client(reload_poll_s=0.05)
    publish(other_bundle, bundle_dir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        served = client.post("/recommend", json={"user_id": "u1"}).json()["model_version"]
        if served == version(other_bundle):
            break
        time.sleep(0.05)
    assert served == version(other_bundle)
    metrics = client.get("/metrics").text
    assert 'cosrec_bundle_reloads_total{result="success"} 2.0' in metrics


def test_a_seen_item_unknown_to_the_bundle_stays_excluded_once_a_bundle_knows_it(
    client, bundle_dir, wider_bundle
):
    """Seen items are kept by id (issue 12, hole 3): a user who took `i31` while the serving
    bundle did not know it never gets `i31` back from a later bundle that does."""
    events = [
        {"user_id": "u1", "item_id": item, "timestamp": t}
        for t, item in enumerate(["i1", "i31", "i2"])
    ]
    assert client.post("/events", json={"events": events}).json()["unknown_items"] == 1
    publish(wider_bundle, bundle_dir)
    assert client.post("/admin/reload").json()["reloaded"]
    answer = client.post("/recommend", json={"user_id": "u1", "n": 31}).json()
    returned = [item["item_id"] for item in answer["items"]]
    assert answer["model_version"] == version(wider_bundle)
    assert set(returned) == {f"i{k}" for k in range(3, 31)}  # all but the three seen
