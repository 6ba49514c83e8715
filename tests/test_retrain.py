"""The closed loop (issue 13), with a real Redis and the real service writing the events:
`cosrec retrain` reads only what is new, promotes a candidate that is no worse on the same
holdout, refuses a poisoned one, keeps lineage, and the registry rolls back atomically."""

from __future__ import annotations

import json
import time

import pytest

from contract.event_log import CURSOR_MARGIN_MS
from contract.registry import Registry
from cosrec.cli import main
from training.fit import TrainConfig
from training.retrain import RetrainSettings, run_cycle
from training.synthetic import generate_log, shuffled_replays

SMALL = {"d": 8, "block_channels": [8, 16], "fc_dim": 12}
POISON_REPLAYS = 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def events_of(log, users: range, first: int, stop: int | None, at: float) -> list[dict]:
    """The generated log's events of `users`, positions [first, stop) of each sequence."""
    events = []
    for k in users:
        user, sequence = log.users.ids[k], log.sequences[k]
        for position, item in enumerate(sequence[first:stop], start=first):
            events.append(
                {
                    "user_id": user,
                    "item_id": log.items.external(int(item)),
                    "timestamp": at + position,
                    "event_id": f"{user}-{position}",
                }
            )
    return events


def post(client, events: list[dict]) -> None:
    for start in range(0, len(events), 1000):
        answer = client.post("/events", json={"events": events[start : start + 1000]})
        assert answer.status_code == 200, answer.text
    # a cycle reads up to CURSOR_MARGIN_MS behind Redis's clock (the next one reads the rest)
    time.sleep(CURSOR_MARGIN_MS / 1000 + 0.1)


def settings(tmp_path, redis_url, **changes) -> RetrainSettings:
    base = RetrainSettings(
        registry=tmp_path / "registry",
        redis_url=redis_url,
        hyperparameters=SMALL,
        train=TrainConfig(epochs=3, progress=False),
    )
    return RetrainSettings(**{**base.__dict__, **changes})


@pytest.fixture(scope="module")
def log():
    return generate_log(num_users=120, num_items=60, length_range=(20, 40), seed=5)


def test_a_cycle_reads_only_new_events_promotes_and_records_lineage(
    client, redis_url, tmp_path, log
):
    config = settings(tmp_path, redis_url)
    post(client, events_of(log, range(120), 0, 20, 1e9))
    first = run_cycle(config)
    assert first.events_read == 120 * 20
    assert first.decision == "promoted"
    registry = Registry(config.registry)
    assert registry.serving_version() == first.candidate

    again = run_cycle(config)  # nothing new: every event was read once
    assert again.events_read == 0

    post(client, events_of(log, range(120), 20, None, 1e9))
    third = run_cycle(config)
    expected_new = sum(max(0, len(s) - 20) for s in log.sequences)
    assert third.events_read == expected_new
    manifest = json.loads((config.registry / third.candidate / "manifest.json").read_text())
    lineage = manifest["lineage"]
    assert lineage["parent_version"] == again.serving
    assert lineage["events_read"] == expected_new
    assert lineage["holdout"]["serving"] is not None  # both measured on the same holdout
    assert lineage["decision"] == third.decision
    assert (config.registry / third.candidate / "checkpoint.pt").is_file()


def test_a_poisoned_stream_is_refused_and_the_serving_bundle_stays(client, redis_url, tmp_path):
    """A corrupted feed (`shuffled_replays`): each user's own items but the newest (the
    holdout) sent again, back-dated, as POISON_REPLAYS shuffled replays.
    The holdout and the seen items stay those of the clean cycle; only the candidate's training
    data is corrupted. Measured: candidate MAP 0.158-0.162 against the serving 0.218-0.234 (1
    and 2 torch threads), so the gate (5% tolerance) refuses it with room to spare."""
    log = generate_log(num_users=300, num_items=100, length_range=(30, 50), seed=5)
    config = settings(
        tmp_path,
        redis_url,
        hyperparameters={"d": 16, "block_channels": [16, 32], "fc_dim": 24},
        train=TrainConfig(epochs=10, progress=False),
    )
    post(client, events_of(log, range(300), 0, None, 1e9))
    clean = run_cycle(config)
    assert clean.decision == "promoted"

    poisoned = [
        {"user_id": user, "item_id": item, "timestamp": at}
        for user, item, at in shuffled_replays(log, POISON_REPLAYS, start=1e8)
    ]
    post(client, poisoned)
    report = run_cycle(config)
    assert report.decision == "refused", report.reason
    assert report.holdout.candidate["map"] < 0.95 * report.holdout.serving["map"]
    assert report.serving == clean.candidate
    assert Registry(config.registry).serving_version() == clean.candidate
    refused = json.loads((config.registry / report.candidate / "manifest.json").read_text())
    assert refused["lineage"]["decision"] == "refused"  # kept, with the reason, not served


def test_rollback_and_bundles_list_through_the_commands(client, redis_url, tmp_path, log, capsys):
    config = settings(tmp_path, redis_url, tolerance=1.0)  # every candidate is promoted
    post(client, events_of(log, range(120), 0, 20, 1e9))
    first = run_cycle(config).candidate
    post(client, events_of(log, range(120), 20, None, 1e9))
    second = run_cycle(config).candidate
    registry = str(config.registry)
    capsys.readouterr()
    assert main(["bundles", "list", "--registry", registry, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["version"], r["serving"]) for r in rows] == [(second, True), (first, False)]
    assert main(["rollback", "--registry", registry]) == 0
    assert Registry(config.registry).serving_version() == first
    assert main(["rollback", "--registry", registry, second]) == 0
    assert Registry(config.registry).serving_version() == second
    assert main(["rollback", "--registry", registry, "no-such-version"]) == 2
