"""The HTTP API in-process (real Redis, a real exported bundle): recommendations and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.schemas import EventsResponse, RecommendResponse


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def onnx_scores(bundle: Path, user_index: int, history: list[str]) -> np.ndarray:
    """Scores straight from onnxruntime for one user and history (oldest first)."""
    spec = manifest(bundle)
    L = spec["sequence_length"]
    index = {item: i for i, item in enumerate(spec["items"], start=1)}
    items = np.zeros((1, L), dtype=np.int64)
    tail = [index[item] for item in history if item in index][-L:]
    items[0, L - len(tail) :] = tail
    session = ort.InferenceSession(str(bundle / "model.onnx"))
    return session.run(None, {"items": items, "users": np.array([user_index])})[0][0]


def post_events(client, events: list[dict]) -> dict:
    response = client.post("/events", json={"events": events})
    assert response.status_code == 200, response.text
    return response.json()


def test_known_user_scores_match_onnxruntime(client, bundle_dir):
    spec = manifest(bundle_dir)
    user = spec["users"][3]
    history = spec["items"][:7]
    # sent newest first, with timestamps: the service must order them by time
    events = [
        {"user_id": user, "item_id": item, "timestamp": 100.0 + t}
        for t, item in reversed(list(enumerate(history)))
    ]
    assert post_events(client, events) == {
        "accepted": 7,
        "duplicates": 0,
        "conflicts": 0,
        "unknown_items": 0,
    }

    body = client.post("/recommend", json={"user_id": user, "n": 5, "exclude_seen": False}).json()

    expected = onnx_scores(bundle_dir, spec["users"].index(user) + 1, history)
    best = np.argsort(-expected, kind="stable")[:5]
    assert body["source"] == "model"
    assert body["model_version"] == spec["model_version"]
    assert body["user_id"] == user
    assert [i["item_id"] for i in body["items"]] == [spec["items"][j] for j in best]
    np.testing.assert_allclose([i["score"] for i in body["items"]], expected[best], rtol=1e-6)


def test_exclude_seen_and_exclude_list(client, bundle_dir):
    spec = manifest(bundle_dir)
    user = spec["users"][0]
    seen = spec["items"][:10]
    post_events(client, [{"user_id": user, "item_id": item} for item in seen])
    excluded = spec["items"][10:15]

    body = client.post("/recommend", json={"user_id": user, "n": 1000, "exclude": excluded}).json()

    returned = [i["item_id"] for i in body["items"]]
    assert sorted(returned) == sorted(set(spec["items"]) - set(seen) - set(excluded))
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)

    everything = client.post(
        "/recommend", json={"user_id": user, "n": 1000, "exclude_seen": False}
    ).json()
    assert len(everything["items"]) == len(spec["items"])


def test_unknown_user_with_history_is_the_generic_user(client, bundle_dir):
    spec = manifest(bundle_dir)
    history = spec["items"][5:9]
    post_events(client, [{"user_id": "new-user", "item_id": item} for item in history])

    body = client.post(
        "/recommend", json={"user_id": "new-user", "n": 3, "exclude_seen": False}
    ).json()

    expected = onnx_scores(bundle_dir, 0, history)
    assert body["source"] == "model"
    assert [i["item_id"] for i in body["items"]] == [
        spec["items"][j] for j in np.argsort(-expected, kind="stable")[:3]
    ]


def test_unknown_user_without_history_gets_popularity(client, bundle_dir):
    spec = manifest(bundle_dir)
    popular = spec["popularity"]
    # an unknown item is no history the model can read
    post_events(client, [{"user_id": "stranger", "item_id": "not-in-catalogue"}])

    body = client.post(
        "/recommend", json={"user_id": "stranger", "n": 4, "exclude": [popular["items"][0]]}
    ).json()

    assert body["source"] == "popularity"
    assert [i["item_id"] for i in body["items"]] == popular["items"][1:5]
    assert [i["score"] for i in body["items"]] == popular["counts"][1:5]


def test_known_user_without_history_uses_the_model(client, bundle_dir):
    user = manifest(bundle_dir)["users"][1]
    body = client.post("/recommend", json={"user_id": user, "n": 2}).json()
    assert body["source"] == "model"
    assert len(body["items"]) == 2


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/recommend", {"n": 3}, ["body", "user_id"]),
        ("/recommend", {"user_id": "u1", "n": 1001}, ["body", "n"]),
        ("/recommend", {"user_id": "u1", "n": 0}, ["body", "n"]),
        ("/recommend", {"user_id": "", "n": 3}, ["body", "user_id"]),
        ("/recommend", {"user_id": "u" * 257}, ["body", "user_id"]),
        ("/recommend", {"user_id": "u1", "colour": "red"}, ["body", "colour"]),
        ("/events", {"events": []}, ["body", "events"]),
        ("/events", {"events": [{"user_id": "u1"}]}, ["body", "events", 0, "item_id"]),
        (
            "/events",
            {"events": [{"user_id": "u1", "item_id": "i1", "timestamp": -1}]},
            ["body", "events", 0, "timestamp"],
        ),
    ],
)
def test_bad_input_is_422_naming_the_field(client, route, body, field):
    response = client.post(route, json=body)
    assert response.status_code == 422
    assert field in [error["loc"] for error in response.json()["detail"]]


def test_nan_timestamp_and_too_many_events_are_422(make_client):
    client = make_client(max_events_per_request=3)
    nan = '{"events": [{"user_id": "u1", "item_id": "i1", "timestamp": NaN}]}'
    response = client.post("/events", content=nan, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "events", 0, "timestamp"]
    many = {"events": [{"user_id": "u1", "item_id": "i1"}] * 4}
    assert client.post("/events", json=many).status_code == 422


def test_bodies_must_be_json(client):
    response = client.post(
        "/recommend", content="user_id=u1", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    json_type = {"content-type": "application/json"}
    for broken in [b"{", b'{"user_id": "\xff"}', b'{"user_id": "\\ud800"}', b"\x00" * 100]:
        response = client.post("/recommend", content=broken, headers=json_type)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][0] == "body"
        assert "input" not in response.json()["detail"][0]


def test_oversized_bodies_are_413(make_client):
    client = make_client(max_body_bytes=4096)
    big = {"events": [{"user_id": "u1", "item_id": "i1"}] * 200}
    response = client.post("/events", json=big)
    assert response.status_code == 413
    chunked = client.post(  # no content-length: the limit holds while reading
        "/events",
        content=iter([b'{"events": [', b" " * 5000, b"]}"]),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413


def test_api_key_guards_writes_and_admin_only(make_client):
    client = make_client(api_key="s3cret")
    event = {"events": [{"user_id": "u1", "item_id": "i1"}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        assert client.post("/events", json=event, headers=headers).status_code == 401
        assert client.post("/admin/reload", headers=headers).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert client.post("/events", json=event, headers=good).status_code == 200
    assert client.post("/admin/reload", headers=good).status_code == 200
    assert client.post("/recommend", json={"user_id": "u1"}).status_code == 200


def test_health_readiness_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/events", "/healthz", "/readyz", "/metrics", "/admin/reload"} <= set(
        paths
    )
    assert "/bench/floor" not in paths
    schema = client.get("/openapi.json").json()
    body = paths["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    events = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert events["properties"]["events"]["maxItems"] == 1000
    recommend = paths["/recommend"]["post"]["requestBody"]["content"]["application/json"]
    assert recommend["schema"]["$ref"].endswith("/RecommendRequest")
    assert schema["components"]["schemas"]["RecommendRequest"]["properties"]["n"]["maximum"] == 1000
    assert client.post("/bench/floor", json={"user_id": "u1"}).status_code == 404


def test_hot_routes_answer_bytes_that_match_their_documented_response_models(client):
    """/recommend and /events serialize their answers themselves (service.api.responses):
    the OpenAPI description still names the response models, and the answers follow them."""
    paths = client.get("/openapi.json").json()["paths"]
    for path, model in (("/recommend", RecommendResponse), ("/events", EventsResponse)):
        answer = paths[path]["post"]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"]["$ref"].endswith(f"/{model.__name__}")
    event = {"user_id": "u1", "item_id": "i1", "timestamp": 1.0, "event_id": "e-bytes"}
    for path, body, model in (
        ("/events", {"events": [event]}, EventsResponse),
        ("/recommend", {"user_id": "u1", "n": 3}, RecommendResponse),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        model.model_validate_json(response.content)  # raises if the bytes stray from the model


def test_bench_floor_validates_like_recommend(make_client):
    client = make_client(bench_floor=True)
    response = client.post("/bench/floor", json={"user_id": "u1", "n": 10})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 10
    assert client.post("/bench/floor", json={"n": 10}).status_code == 422
