"""`cosrec train` / `cosrec split` read the service's durable event log back (--format redis)."""

from __future__ import annotations

import pytest

from cosrec.cli import main as cosrec
from cosrec.processes import free_port
from training.readers import DataFormatError, read_interactions


def test_events_accepted_by_the_service_come_back_as_training_sequences(client, redis_url):
    # u1's events arrive out of time order, and one is a retry: the log keeps time order, once.
    events = [
        {"user_id": "u1", "item_id": "b", "timestamp": 20, "event_id": "e2"},
        {"user_id": "u1", "item_id": "a", "timestamp": 10, "event_id": "e1"},
        {"user_id": "u2", "item_id": "c", "timestamp": 5},
        {"user_id": "u1", "item_id": "c", "timestamp": 30, "event_id": "e3"},
        {"user_id": "u1", "item_id": "b", "timestamp": 20, "event_id": "e2"},
    ]
    assert client.post("/events", json={"events": events}).status_code == 200

    seqs = read_interactions(redis_url, "redis")

    histories = {
        seqs.users.external(u + 1): [seqs.items.external(i) for i in seq]
        for u, seq in enumerate(seqs.sequences)
    }
    assert histories == {"u1": ["a", "b", "c"], "u2": ["c"]}


def test_split_reads_the_event_log(client, redis_url, tmp_path, capsys):
    events = [
        {"user_id": f"user{u}", "item_id": f"item{(u + k) % 4}", "timestamp": k}
        for u in range(3)
        for k in range(6)
    ]
    assert client.post("/events", json={"events": events}).status_code == 200

    argv = ["split", "--data", redis_url, "--format", "redis", "--out", str(tmp_path / "split")]
    assert cosrec([*argv, "--min-item-count", "1", "--min-user-count", "1"]) == 0

    assert "3 users, 4 items, 18 actions" in capsys.readouterr().out
    train: dict[str, list[str]] = {}
    for line in (tmp_path / "split" / "test" / "train.txt").read_text().splitlines():
        user, item, _ = line.split()
        train.setdefault(user, []).append(item)
    # users come in the log's (SCAN) order; each user's items in time order: first ceil(0.8 * 6)
    assert train == {f"user{u}": [f"item{(u + k) % 4}" for k in range(5)] for u in range(3)}


def test_an_empty_or_unreachable_log_is_a_clear_error(redis_url):
    with pytest.raises(DataFormatError, match="holds no events"):
        read_interactions(redis_url, "redis")
    with pytest.raises(DataFormatError, match="cannot read the event log"):
        read_interactions(f"redis://127.0.0.1:{free_port()}/0", "redis")
