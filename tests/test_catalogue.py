"""The item catalogue and the business rules through the HTTP API (real Redis, a real bundle):
the catalogue routes, the filters of /recommend, the top-up from items only the catalogue
knows, every worker seeing a change within the poll interval, the start-up file, and a
property test of generated catalogues and requests end to end."""

from __future__ import annotations

import json
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rules import oracle_eligible

from contract.redis_layout import catalogue_keys
from cosrec.processes import wait_until
from service.rules import Rules

KEY = {"Authorization": "Bearer k3y"}


def manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def test_catalogue_routes_need_the_key_and_validate(make_client, redis_url):
    client = make_client(api_key="k3y")
    item = {"categories": ["drama"], "tags": ["new"], "available": True}
    assert client.put("/items/i1", json=item).status_code == 401
    written = client.put("/items/i1", json=item, headers=KEY)
    assert written.status_code == 200, written.text
    assert written.json()["item_id"] == "i1"
    assert client.get("/items/i1", headers=KEY).json()["attributes"] == {
        "categories": ["drama"],
        "tags": ["new"],
    }
    path_id = client.put("/items/a%2Fb c", json={}, headers=KEY)  # any id, percent-encoded
    assert path_id.status_code == 200
    assert path_id.json()["item_id"] == "a/b c"
    bulk = client.put(
        "/items",
        json={"items": [{"item_id": "i2", "available": False}, {"item_id": "x9"}]},
        headers=KEY,
    )
    assert bulk.json()["written"] == 2
    assert bulk.json()["version"] > written.json()["version"]
    for bad in (
        {"categories": "drama"},
        {"available_from": 10, "available_until": 5},
        {"colour": "red"},
        {"tags": ["\u0000"]},
    ):
        response = client.put("/items/i1", json=bad, headers=KEY)
        assert response.status_code == 422, bad
    assert client.delete("/items/i2", headers=KEY).json()["deleted"] is True
    assert client.delete("/items/i2", headers=KEY).json()["deleted"] is False
    assert client.get("/items/i2", headers=KEY).status_code == 404
    raw = redis.Redis.from_url(redis_url)
    assert raw.hlen(catalogue_keys("cosrec").items) == 3  # i1, a/b c, x9
    raw.close()


def test_catalogue_writes_go_on_after_redis_forgets_its_scripts(make_client, redis_url):
    client = make_client(api_key="k3y")
    assert client.put("/items/s1", json={}, headers=KEY).status_code == 200
    with redis.Redis.from_url(redis_url) as direct:
        direct.script_flush()  # what a restart or a failover to a fresh replica leaves
    again = client.put("/items/s2", json={"categories": ["drama"]}, headers=KEY)
    assert again.status_code == 200, again.text
    assert client.get("/items/s2", headers=KEY).json()["attributes"] == {"categories": ["drama"]}


def test_the_catalogue_is_bounded(make_client):
    client = make_client(max_catalogue_items=2)
    assert (
        client.put("/items", json={"items": [{"item_id": "a"}, {"item_id": "b"}]}).json()["written"]
        == 2
    )
    full = client.put("/items/c", json={})
    assert full.status_code == 409
    assert "COSREC_MAX_CATALOGUE_ITEMS" in full.json()["detail"]
    assert client.put("/items/a", json={"tags": ["t"]}).status_code == 200  # replacing is fine
    assert client.put("/items", json={"items": [{"item_id": "d"}]}).json()["refused"] == 1


def test_filters_and_why_each_item_is_there(client, bundle_dir):
    spec = manifest(bundle_dir)
    items = spec["items"]
    catalogue = [
        {"item_id": item, "categories": [f"c{k % 3}"], "tags": ["even"] if k % 2 == 0 else []}
        for k, item in enumerate(items)
    ]
    catalogue[0]["available"] = False
    catalogue[1]["available_until"] = time.time() - 10  # no longer available
    catalogue[2]["available_from"] = time.time() + 3600  # not yet
    catalogue += [
        {"item_id": "new-1", "categories": ["c0"], "popularity": 3},
        {"item_id": "new-2", "categories": ["c1"], "popularity": 9},
    ]
    assert client.put("/items", json={"items": catalogue}).status_code == 200
    user = spec["users"][0]
    client.post("/events", json={"events": [{"user_id": user, "item_id": items[5]}]})

    everything = client.post("/recommend", json={"user_id": user, "n": 1000}).json()
    assert not {items[0], items[1], items[2], items[5]} & set(ids(everything))  # unavailable, seen
    assert len(everything["items"]) == len(items) - 4 + 2  # topped up with the two new items
    reasons = [item["reason"] for item in everything["items"]]
    assert reasons == ["model"] * (len(items) - 4) + ["popularity"] * 2
    assert ids(everything)[-2:] == ["new-2", "new-1"]  # by their catalogue popularity
    assert everything["recommendation_id"].startswith("A.")
    assert everything["variant"] == "A"

    ask = {"user_id": user, "n": 1000, "include_categories": ["c0"], "exclude_tags": ["even"]}
    body = client.post("/recommend", json=ask).json()
    expected = {c["item_id"] for c in catalogue if c.get("categories") == ["c0"]}
    expected -= {c["item_id"] for c in catalogue if "even" in c.get("tags", [])}
    expected -= {items[0], items[1], items[2], items[5]}
    assert set(ids(body)) == expected

    capped = client.post("/recommend", json={"user_id": user, "n": 5, "max_per_category": 1})
    categories = [
        next(c["categories"][0] for c in catalogue if c["item_id"] == i) for i in ids(capped.json())
    ]
    assert len(categories) == 3 == len(set(categories))  # three categories, one each

    wanted = [items[3], items[0], "new-2", "nowhere"]
    only = client.post("/recommend", json={"user_id": user, "n": 10, "candidates": wanted}).json()
    assert set(ids(only)) == {items[3], "new-2", "nowhere"}  # items[0] is unavailable
    assert only["items"][0]["item_id"] == items[3]
    assert only["items"][0]["reason"] == "model"
    anything = client.post(
        "/recommend", json={"user_id": user, "n": 1000, "only_available": False}
    ).json()
    assert {items[0], items[1], items[2]} <= set(ids(anything))


def test_deployment_defaults_apply_unless_a_request_says_otherwise(make_client, bundle_dir):
    items = manifest(bundle_dir)["items"]
    client = make_client(default_exclude_categories="adult", default_max_per_category=2)
    client.put(
        "/items", json={"items": [{"item_id": i, "categories": ["adult"]} for i in items[:20]]}
    )
    body = client.post("/recommend", json={"user_id": "someone", "n": 30}).json()
    assert not set(ids(body)) & set(items[:20])
    assert len(body["items"]) == 10  # the other ten: they have no category, so no cap
    opened = client.post(
        "/recommend", json={"user_id": "someone", "n": 30, "exclude_categories": []}
    ).json()
    assert len(set(ids(opened)) & set(items[:20])) == 2  # the default cap of 2 per category


def test_unlisted_items_can_be_denied(make_client, bundle_dir):
    items = manifest(bundle_dir)["items"]
    client = make_client(catalogue_unlisted="deny")
    assert client.post("/recommend", json={"user_id": "u", "n": 5}).json()["items"] == []
    client.put("/items", json={"items": [{"item_id": i} for i in items[:3]]})
    assert set(ids(client.post("/recommend", json={"user_id": "u", "n": 5}).json())) == set(
        items[:3]
    )


def test_every_worker_sees_a_change_within_the_poll_interval(make_client, bundle_dir):
    items = manifest(bundle_dir)["items"]
    writer = make_client(catalogue_poll_s=0.1)
    other = make_client(catalogue_poll_s=0.1)  # another worker (or replica): its own copy
    user = "watcher"
    assert items[0] in ids(other.post("/recommend", json={"user_id": user, "n": 1000}).json())
    changed = time.monotonic()
    writer.put(f"/items/{items[0]}", json={"available": False})
    assert items[0] not in ids(writer.post("/recommend", json={"user_id": user, "n": 1000}).json())

    def honoured() -> bool:
        return items[0] not in ids(
            other.post("/recommend", json={"user_id": user, "n": 1000}).json()
        )

    wait_until(honoured, 2.0, "the other worker did not see the change")
    assert time.monotonic() - changed < 1.0  # poll 0.1 s, plus a round trip and the rebuild


def test_the_start_up_file_is_loaded_once(make_client, bundle_dir, tmp_path):
    items = manifest(bundle_dir)["items"]
    path = tmp_path / "catalogue.jsonl"
    path.write_text(
        "".join(json.dumps({"item_id": i, "available": False}) + "\n" for i in items[:5])
    )
    first = make_client(catalogue=path)
    assert not set(ids(first.post("/recommend", json={"user_id": "f", "n": 1000}).json())) & set(
        items[:5]
    )
    first.put(f"/items/{items[0]}", json={"available": True})  # a run-time update
    again = make_client(catalogue=path)  # a restart with the same file keeps the update
    answer = ids(again.post("/recommend", json={"user_id": "f", "n": 1000}).json())
    assert items[0] in answer
    assert not set(answer) & set(items[1:5])


def test_a_redis_that_lost_the_catalogue_gets_the_start_up_file_again(
    make_client, redis_url, bundle_dir, tmp_path
):
    items = manifest(bundle_dir)["items"]
    path = tmp_path / "catalogue.jsonl"
    path.write_text(json.dumps({"item_id": items[0], "available": False}) + "\n")
    client = make_client(catalogue=path, catalogue_poll_s=0.1)
    assert client.get(f"/items/{items[0]}", headers=KEY).status_code == 200
    with redis.Redis.from_url(redis_url) as direct:
        direct.flushall()  # a restart without persistence
    wait_until(
        lambda: client.get(f"/items/{items[0]}", headers=KEY).status_code == 200,
        3.0,
        "the start-up file was not published again",
    )
    answer = ids(client.post("/recommend", json={"user_id": "lost", "n": 1000}).json())
    assert items[0] not in answer


def test_rules_hold_while_redis_is_down(make_client, redis_process, bundle_dir):
    items = manifest(bundle_dir)["items"]
    client = make_client()
    client.put("/items", json={"items": [{"item_id": i, "available": False} for i in items[:10]]})
    redis_process.stop()
    body = client.post("/recommend", json={"user_id": "down", "n": 1000}).json()
    assert body["source"] == "popularity_fallback"
    assert not set(ids(body)) & set(items[:10])
    assert len(body["items"]) == len(items) - 10


# ---------------------------------------------------------------- end to end, generated
@st.composite
def cases(draw, items: list[str]) -> dict:
    universe = [*items[:12], "only-catalogue-1", "only-catalogue-2"]
    listed = {}
    for item_id in draw(st.lists(st.sampled_from(universe), unique=True)):
        listed[item_id] = {
            "categories": draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True)),
            "tags": draw(st.lists(st.sampled_from(["x", "y"]), max_size=1)),
            "available": draw(st.booleans()),
            "popularity": draw(st.integers(0, 3)),
        }
    include = draw(st.one_of(st.none(), st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)))
    candidates = draw(st.one_of(st.none(), st.lists(st.sampled_from([*universe, "z"]), max_size=6)))
    request = {
        "n": draw(st.integers(1, len(items) + 3)),
        "exclude": draw(st.lists(st.sampled_from(universe), max_size=3)),
        "exclude_tags": draw(st.lists(st.sampled_from(["x", "y"]), max_size=1)),
        "max_per_category": draw(st.integers(0, 2)),
        "only_available": draw(st.booleans()),
    }
    if include is not None:
        request["include_categories"] = include
    if candidates is not None:
        request["candidates"] = candidates
    return {
        "listed": listed,
        "request": request,
        "history": draw(st.lists(st.sampled_from(universe), max_size=4)),
    }


def test_generated_catalogues_and_requests_end_to_end(make_client, bundle_dir):
    spec = manifest(bundle_dir)
    items = spec["items"]
    client = make_client()
    counter = iter(range(10**6))

    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=cases(items))
    def run(case) -> None:
        k = next(counter)
        user = f"p{k}"
        catalogue = {item_id: {} for item_id in [*items, "only-catalogue-1", "only-catalogue-2"]}
        catalogue.update(case["listed"])
        # every item written: the previous example's attributes are replaced
        client.put("/items", json={"items": [{"item_id": i, **a} for i, a in catalogue.items()]})
        if case["history"]:
            events = [{"user_id": user, "item_id": i} for i in case["history"]]
            assert client.post("/events", json={"events": events}).status_code == 200
        response = client.post("/recommend", json={"user_id": user, **case["request"]})
        assert response.status_code == 200, response.text
        body = response.json()
        request = case["request"]
        rules = Rules(
            include_categories=frozenset(request["include_categories"])
            if "include_categories" in request
            else None,
            exclude_tags=frozenset(request["exclude_tags"]),
            only_available=request["only_available"],
            candidates=frozenset(request["candidates"]) if "candidates" in request else None,
            max_per_category=request["max_per_category"],
        )
        excluded = set(request["exclude"]) | set(case["history"])
        universe = set(catalogue) | (rules.candidates or set())
        eligible = {
            i for i in universe if i not in excluded and oracle_eligible(i, catalogue, rules, True)
        }
        answered = ids(body)
        assert len(answered) == len(set(answered))
        for item_id in answered:
            assert item_id not in excluded
            assert oracle_eligible(item_id, catalogue, rules, True), item_id
        per_category: dict[str, int] = {}
        for item_id in answered:
            for category in catalogue.get(item_id, {}).get("categories", []):
                per_category[category] = per_category.get(category, 0) + 1
        cap = rules.max_per_category
        if not cap:
            assert len(answered) == min(request["n"], len(eligible))
        else:
            assert max(per_category.values(), default=0) <= cap
            if len(answered) < request["n"]:
                for item_id in eligible - set(answered):
                    cats = catalogue.get(item_id, {}).get("categories", [])
                    assert any(per_category.get(c, 0) >= cap for c in cats)

    run()


@pytest.mark.parametrize("field", ["include_categories", "exclude_tags", "candidates"])
def test_filter_lists_are_bounded(make_client, field):
    client = make_client(max_filter_values=2, max_candidates=2)
    response = client.post("/recommend", json={"user_id": "u", field: ["a", "b", "c"]})
    assert response.status_code == 422
    assert ["body", field] == response.json()["detail"][0]["loc"][:2]
