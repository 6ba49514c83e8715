"""Business rules, property-tested: generated catalogues, bundles, histories and requests go
through the Recommender's real code paths (model ranking, popularity answers, the top-up, the
Redis fallback); an independent oracle checks every answer. 0 rule violations, and `n` items
whenever `n` eligible items exist (with a cap: no eligible item left out that would fit)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.bundle import Popularity
from contract.ids import Vocabulary
from service.catalogue import Catalogue, ItemAttributes, catalogue_of, read_catalogue_file
from service.metrics import Metrics
from service.recommender import (
    SOURCE_FALLBACK,
    SOURCE_MODEL,
    SOURCE_POPULARITY,
    Recommender,
    RecommendJob,
)
from service.rules import Indexes, Rules, resolve_rules
from service.schemas import request_schemas
from service.settings import Settings
from service.store import History

CATEGORIES = ["c0", "c1", "c2", "c3"]
TAGS = ["t0", "t1", "t2"]
NOW = time.time()


@dataclass(frozen=True, eq=False)
class FakeBundle:
    """What the Recommender reads of a bundle; scores are a fixed row per user index."""

    items: Vocabulary
    users: Vocabulary
    manifest: Any
    table: np.ndarray  # [users + 1, items]
    sequence_length: int = 3
    model_version: str = "fake-000000000000"

    def score(self, _items: np.ndarray, users: np.ndarray) -> np.ndarray:
        return self.table[users].astype(np.float32)


@dataclass
class FakeStore:
    """Each read answers the histories of `histories` in order (one per job of the batch)."""

    histories: list[list[str]] = field(default_factory=list)
    down: bool = False

    async def read(self, requests, _timeout_s=None) -> list[History]:
        if self.down:
            raise ConnectionError("Redis is down (fake)")
        out = []
        for (_, window, with_seen), history in zip(requests, self.histories, strict=True):
            recent = [i.encode() for i in history]
            out.append(History(recent[-window:], recent if with_seen else None))
        return out


# ---------------------------------------------------------------- the oracle
def oracle_eligible(item_id: str, listed: dict, rules: Rules, unlisted_allowed: bool) -> bool:
    attributes = listed.get(item_id)
    if attributes is None:
        if not unlisted_allowed:
            return False
        attributes = {}
    categories = set(attributes.get("categories", []))
    tags = set(attributes.get("tags", []))
    if rules.candidates is not None and item_id not in rules.candidates:
        return False
    if rules.include_categories is not None and not categories & rules.include_categories:
        return False
    if categories & rules.exclude_categories:
        return False
    if rules.include_tags is not None and not tags & rules.include_tags:
        return False
    if tags & rules.exclude_tags:
        return False
    if rules.only_available:
        if not attributes.get("available", True):
            return False
        start = attributes.get("available_from")
        until = attributes.get("available_until")
        if start is not None and start > NOW:
            return False
        if until is not None and until <= NOW:
            return False
    return True


# ---------------------------------------------------------------- generated worlds
@st.composite
def worlds(draw) -> dict:
    universe = [f"i{k}" for k in range(draw(st.integers(2, 14)))]
    known = draw(st.lists(st.sampled_from(universe), min_size=1, unique=True))
    listed_ids = draw(st.lists(st.sampled_from(universe), unique=True))
    listed = {}
    window = st.one_of(st.none(), st.sampled_from([NOW - 1000, NOW + 1000]))
    for item_id in listed_ids:
        start, until = draw(window), draw(window)
        if start is not None and until is not None and until < start:
            start, until = until, start
        listed[item_id] = ItemAttributes(
            categories=draw(st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True)),
            tags=draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
            available=draw(st.booleans()),
            available_from=start,
            available_until=until,
            popularity=draw(st.integers(0, 5)),
        ).model_dump(exclude_defaults=True)
    popular = draw(st.lists(st.sampled_from(known), unique=True))
    counts = sorted((draw(st.integers(1, 9)) for _ in popular), reverse=True)
    users = ["u1", "u2"]
    # few distinct values: ties between scores are common
    table = np.asarray(
        draw(
            st.lists(
                st.lists(
                    st.sampled_from([0.0, 0.5, 1.0, 2.0, -3.0]),
                    min_size=len(known),
                    max_size=len(known),
                ),
                min_size=len(users) + 1,
                max_size=len(users) + 1,
            )
        ),
        dtype=np.float32,
    )
    return {
        "universe": universe,
        "known": known,
        "listed": listed,
        "popular": (popular, counts),
        "users": users,
        "table": table,
        "unlisted_allowed": draw(st.booleans()),
    }


def label_sets(draw, names: list[str]) -> frozenset[str] | None:
    value = draw(st.one_of(st.none(), st.lists(st.sampled_from(names), max_size=3)))
    return None if value is None else frozenset(value)


@st.composite
def requests(draw, world: dict) -> dict:
    ids = [*world["universe"], "x-unknown"]
    candidates = draw(st.one_of(st.none(), st.lists(st.sampled_from(ids), max_size=8)))
    rules = Rules(
        include_categories=label_sets(draw, CATEGORIES),
        exclude_categories=label_sets(draw, CATEGORIES) or frozenset(),
        include_tags=label_sets(draw, TAGS),
        exclude_tags=label_sets(draw, TAGS) or frozenset(),
        only_available=draw(st.booleans()),
        candidates=None if candidates is None else frozenset(candidates),
        max_per_category=draw(st.integers(0, 3)),
    )
    user = draw(st.sampled_from([*world["users"], "stranger"]))
    history = draw(st.lists(st.sampled_from(ids), max_size=6))
    return {
        "user": user,
        "history": history,
        "n": draw(st.integers(1, len(ids) + 2)),
        "exclude": draw(st.lists(st.sampled_from(ids), max_size=3)),
        "exclude_seen": draw(st.booleans()),
        "rules": rules,
    }


def build(world: dict) -> tuple[FakeBundle, Catalogue]:
    popular, counts = world["popular"]
    manifest = type(
        "Manifest",
        (),
        {"items": list(world["known"]), "popularity": Popularity(items=popular, counts=counts)},
    )
    bundle = FakeBundle(
        Vocabulary(tuple(world["known"])),
        Vocabulary(tuple(world["users"])),
        manifest,
        world["table"],
    )
    listed = [(i, ItemAttributes.model_validate(a)) for i, a in world["listed"].items()]
    return bundle, catalogue_of(listed, version=1)


def answer(world: dict, asks: list[dict], down: bool = False) -> list:
    bundle, catalogue = build(world)
    store = FakeStore([a["history"] for a in asks], down=down)
    indexes = Indexes(lambda: catalogue, world["unlisted_allowed"])
    recommender = Recommender(lambda: [bundle], store, Metrics(), 4, True, indexes)

    async def run() -> list:
        deadline = asyncio.get_running_loop().time() + 30
        jobs = [
            RecommendJob(
                a["user"], a["n"], a["exclude_seen"], tuple(a["exclude"]), deadline, a["rules"]
            )
            for a in asks
        ]
        return await recommender.process(jobs)

    try:
        return asyncio.run(run())
    finally:
        recommender.close()


def check(world: dict, ask: dict, result, seen_known: bool = True) -> None:
    rules: Rules = ask["rules"]
    listed = world["listed"]
    allowed = world["unlisted_allowed"]
    ids = result.item_ids
    assert len(ids) == len(set(ids)), "an item twice"
    excluded = set(ask["exclude"])
    if ask["exclude_seen"] and seen_known:
        excluded |= set(ask["history"])
    universe = set(world["known"]) | set(listed) | (rules.candidates or set())
    eligible = {
        i for i in universe if i not in excluded and oracle_eligible(i, listed, rules, allowed)
    }
    for item_id in ids:  # 0 rule violations
        assert item_id not in excluded, (item_id, "excluded or seen")
        assert oracle_eligible(item_id, listed, rules, allowed), (item_id, rules)
    cap = rules.max_per_category
    per_category: dict[str, int] = {}
    for item_id in ids:
        for category in listed.get(item_id, {}).get("categories", []):
            per_category[category] = per_category.get(category, 0) + 1
    if cap:
        assert max(per_category.values(), default=0) <= cap, per_category
    n = ask["n"]
    if not cap:
        assert len(ids) == min(n, len(eligible)), (len(ids), n, sorted(eligible))
    elif len(ids) < n:  # no eligible item left out that would still fit under the cap
        for item_id in eligible - set(ids):
            categories = listed.get(item_id, {}).get("categories", [])
            assert any(per_category.get(c, 0) >= cap for c in categories), item_id
    # the model's items come first, best first; the rest topped up from popularity
    assert 0 <= result.from_model <= len(ids)
    if result.source != SOURCE_MODEL:
        assert result.from_model == 0
    model_scores = result.scores[: result.from_model]
    assert model_scores == sorted(model_scores, reverse=True)
    assert all(i in world["known"] for i in ids[: result.from_model])
    assert all(math.isfinite(s) for s in result.scores)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_answer_honours_the_rules_and_is_full_when_it_can_be(data):
    world = data.draw(worlds())
    asks = data.draw(st.lists(requests(world), min_size=1, max_size=6))
    results = answer(world, asks)
    for ask, result in zip(asks, results, strict=True):
        check(world, ask, result)
        if ask["user"] == "stranger" and not set(ask["history"]) & set(world["known"]):
            assert result.source == SOURCE_POPULARITY


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_redis_fallback_honours_the_rules_too(data):
    world = data.draw(worlds())
    asks = data.draw(st.lists(requests(world), min_size=1, max_size=3))
    for ask, result in zip(asks, answer(world, asks, down=True), strict=True):
        assert result.source == SOURCE_FALLBACK
        check(world, ask, result, seen_known=False)  # the seen items cannot be read


def test_top_up_fills_from_items_only_the_catalogue_knows():
    world = {
        "universe": ["a", "b", "new1", "new2"],
        "known": ["a", "b"],
        "listed": {
            "new1": {"categories": ["c0"], "popularity": 1},
            "new2": {"categories": ["c0"], "popularity": 5},
            "b": {"available": False},
        },
        "popular": (["a"], [3]),
        "users": ["u1"],
        "table": np.array([[1.0, 2.0], [1.0, 2.0]], dtype=np.float32),
        "unlisted_allowed": True,
    }
    ask = {"user": "u1", "history": ["a"], "n": 3, "exclude": [], "exclude_seen": False}
    ask["rules"] = Rules(only_available=True)
    (result,) = answer(world, [ask])
    assert result.source == SOURCE_MODEL
    assert result.item_ids == ["a", "new2", "new1"]  # the model's eligible item, then popularity
    assert result.from_model == 1
    ask["rules"] = Rules(only_available=True, max_per_category=1)
    (result,) = answer(world, [ask])
    assert result.item_ids == ["a", "new2"]  # one of c0: the cap holds even if n is not reached


def test_the_catalogue_file_formats(tmp_path):
    lines = tmp_path / "items.jsonl"
    lines.write_text(
        '{"item_id": "a", "categories": ["x"]}\n\n{"item_id": "b", "available": false}\n'
    )
    listed = tmp_path / "items.json"
    listed.write_text('[{"item_id": "a", "tags": ["t"]}]')
    mapping = tmp_path / "map.json"
    mapping.write_text('{"a": {"available_until": 5}, "b": {}}')
    assert [i for i, _ in read_catalogue_file(lines)] == ["a", "b"]
    assert read_catalogue_file(listed)[0][1].tags == ["t"]
    assert read_catalogue_file(mapping)[0][1].available_until == 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "a"}\n{"item_id": "b", "colour": "red"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_catalogue_file(bad)
    window = tmp_path / "window.jsonl"
    window.write_text('{"item_id": "a", "available_from": 10, "available_until": 5}\n')
    with pytest.raises(ValueError, match="before available_from"):
        read_catalogue_file(window)


FILTER_NAMES = st.sampled_from(["a", "b", "c", "d"])


@settings(max_examples=200, deadline=None)
@given(
    sent=st.fixed_dictionaries(
        {},
        optional={
            "include_categories": st.none() | st.lists(FILTER_NAMES, max_size=3),
            "exclude_categories": st.none() | st.lists(FILTER_NAMES, max_size=3),
            "include_tags": st.none() | st.lists(FILTER_NAMES, max_size=3),
            "exclude_tags": st.none() | st.lists(FILTER_NAMES, max_size=3),
            "only_available": st.none() | st.booleans(),
            "candidates": st.none() | st.lists(FILTER_NAMES, max_size=3),
            "max_per_category": st.none() | st.integers(0, 5),
        },
    )
)
def test_a_requests_rules_are_its_filters_over_the_defaults_one_object_per_filter_set(sent):
    defaults = Rules(exclude_categories=frozenset({"x"}), only_available=True, max_per_category=2)
    schema = request_schemas(Settings()).recommend
    body = json.dumps({"user_id": "u", **sent})
    rules = resolve_rules(schema.model_validate_json(body), defaults)
    expected = {
        name: frozenset(value) if isinstance(value, list) else value
        for name, value in sent.items()
        if value is not None
    }
    assert rules == replace(defaults, **expected)
    again = resolve_rules(schema.model_validate_json(body), defaults)
    if sent.get("candidates") is None:  # the same filters share one object
        assert again is rules
    else:  # a candidate list is per request: never kept (the cache stays bounded)
        assert again is not rules
        assert again == rules
