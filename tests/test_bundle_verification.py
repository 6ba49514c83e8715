"""A bundle is verified whole before it serves (issue 12, hole 1): the manifest's every field,
and an identity (model_version) that covers both files. A bad bundle is refused with 409 and
a message, counted and logged; the watcher keeps running and takes the next good bundle."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from test_service_reload import publish, version


def edit(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def shuffle_items(manifest: dict) -> None:
    items = manifest["items"]
    items[0], items[1] = items[1], items[0]


def popularity_count_not_a_number(manifest: dict) -> None:
    manifest["popularity"]["counts"][0] = "lots"


def popularity_cut_to_three_counts(manifest: dict) -> None:
    manifest["popularity"]["counts"] = manifest["popularity"]["counts"][:3]


def an_unknown_field(manifest: dict) -> None:
    manifest["surprise"] = 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (shuffle_items, "model_version"),
        (popularity_count_not_a_number, "popularity: counts: 0"),
        (popularity_cut_to_three_counts, "counts"),
        (an_unknown_field, "surprise"),
    ],
    ids=["shuffled-items", "count-lots", "counts-cut", "unknown-field"],
)
def test_an_edited_manifest_is_refused_with_409_and_the_old_bundle_serves(
    client, bundle_dir, change, reason
):
    old = version(bundle_dir)
    edit(bundle_dir, change)
    response = client.post("/admin/reload")
    assert response.status_code == 409
    assert reason in response.json()["error"]
    assert response.json()["model_version"] == old
    for user in ("u1", "someone-without-history"):  # model and popularity answers both work
        answer = client.post("/recommend", json={"user_id": user, "n": 5})
        assert answer.status_code == 200
        assert answer.json()["model_version"] == old


def test_the_watcher_refuses_a_bad_bundle_logs_and_counts_it_then_takes_the_next_good_one(
    make_client, bundle_dir, other_bundle, caplog
):
    client = make_client(reload_poll_s=0.05)
    old = version(bundle_dir)
    with caplog.at_level(logging.ERROR, logger="cosrec.service"):
        edit(bundle_dir, popularity_count_not_a_number)
        wait_for(lambda: 'cosrec_bundle_reloads_total{result="failure"} 1.0' in metrics(client))
    assert any("reload refused" in record.getMessage() for record in caplog.records)
    assert client.post("/recommend", json={"user_id": "u1"}).json()["model_version"] == old

    publish(other_bundle, bundle_dir)  # the watcher is still running
    wait_for(
        lambda: (
            client.post("/recommend", json={"user_id": "u1"}).json()["model_version"]
            == version(other_bundle)
        )
    )


def metrics(client) -> str:
    return client.get("/metrics").text


def wait_for(condition, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
