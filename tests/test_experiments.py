"""Online experiments through the API (real Redis, real bundles): variants with sticky
assignment, recommendation ids, typed and attributed events, the record the report joins, the
shadow bundle's agreement metric, `cosrec experiment report`, and the statistics it prints."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random

import redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from contract.attribution import read_attribution, variant_of
from contract.redis_layout import REC_ID, recommendations_key, user_keys
from cosrec.cli import main as cosrec_main
from cosrec.experiments import two_proportion_test, wilson_interval
from cosrec.processes import wait_until
from service.experiments import Experiment, RecommendationLog
from service.metrics import Metrics


def version_of(bundle) -> str:
    return json.loads((bundle / "manifest.json").read_text())["model_version"]


def scrape(client) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }


def drain(client) -> None:
    """Wait until the worker has written every recommendation it recorded."""
    recorder = client.app.state.services.recorder
    client.portal.call(recorder.drain, 5.0)


def test_assignment_is_sticky_salted_and_weighted():
    experiment = Experiment(["A", "B", "C"], [0.5, 0.3, 0.2], "salt-1")
    users = [f"user-{k}" for k in range(20_000)]
    assigned = [experiment.assign(u) for u in users]
    assert assigned == [experiment.assign(u) for u in users]  # sticky
    shares = [assigned.count(k) / len(users) for k in range(3)]
    for share, weight in zip(shares, [0.5, 0.3, 0.2], strict=True):
        assert abs(share - weight) < 0.015
    reshuffled = Experiment(["A", "B", "C"], [0.5, 0.3, 0.2], "salt-2")
    moved = sum(a != reshuffled.assign(u) for a, u in zip(assigned, users, strict=True))
    assert moved > len(users) * 0.4  # another salt: another split
    assert {Experiment(["A", "B"], [1.0, 0.0], "s").assign(u) for u in users[:500]} == {0}


def test_assignment_is_the_salt_keyed_blake2b_of_the_user_placed_on_the_weights():
    """The documented rule, computed here from hashlib: every version of the service (and any
    other tool) puts a user in the same variant."""
    experiment = Experiment(["A", "B", "C"], [0.5, 0.3, 0.2], "salt-1")
    for user in [f"user-{k}" for k in range(5_000)]:
        digest = hashlib.blake2b(user.encode(), digest_size=8, key=b"salt-1").digest()
        point = int.from_bytes(digest, "big") / 2**64
        assert experiment.assign(user) == (0 if point < 0.5 else 1 if point < 0.8 else 2)


def test_variants_answer_with_their_own_bundle(make_client, bundle_dir, other_bundle):
    settings = {"variants": f"B={other_bundle}:0.5", "experiment_salt": "t"}
    client = make_client(**settings)
    replica = make_client(**settings)  # another worker: the same users, the same variants
    versions = {"A": version_of(bundle_dir), "B": version_of(other_bundle)}
    seen_variants = set()
    rids = set()
    for k in range(60):
        user = f"v{k}"
        body = client.post("/recommend", json={"user_id": user, "n": 3}).json()
        assert body["model_version"] == versions[body["variant"]]
        assert variant_of(body["recommendation_id"]) == body["variant"]
        again = replica.post("/recommend", json={"user_id": user, "n": 3}).json()
        assert again["variant"] == body["variant"]
        seen_variants.add(body["variant"])
        rids |= {body["recommendation_id"], again["recommendation_id"]}
    assert seen_variants == {"A", "B"}
    assert len(rids) == 120  # every answer has its own id
    served = scrape(client)
    total = sum(v for (name, _), v in served.items() if name == "cosrec_recommendations_total")
    assert total == 60
    assert {
        dict(labels)["variant"]
        for (name, labels) in served
        if name == "cosrec_recommendations_total"
    } == {"A", "B"}


def test_typed_events_are_attributed_and_the_report_joins_them(
    make_client, redis_url, other_bundle
):
    client = make_client(variants=f"B={other_bundle}:0.5")
    raw = redis.Redis.from_url(redis_url)
    shown: dict[str, dict] = {}
    for k in range(40):
        user = f"r{k}"
        shown[user] = client.post("/recommend", json={"user_id": user, "n": 4}).json()
    drain(client)
    for user in shown:
        assert raw.xlen(recommendations_key("cosrec", user)) == 1
    events = []
    for k, (user, body) in enumerate(shown.items()):
        rid, first = body["recommendation_id"], body["items"][0]["item_id"]
        if k % 2 == 0:
            events.append(
                {"user_id": user, "item_id": first, "type": "click", "recommendation_id": rid}
            )
        if k % 4 == 0:
            events.append(
                {"user_id": user, "item_id": first, "type": "purchase", "recommendation_id": rid}
            )
    # not attributed: an item the recommendation did not show, and another user's rid
    users = list(shown)
    events.append(
        {
            "user_id": users[1],
            "item_id": "elsewhere",
            "type": "click",
            "recommendation_id": shown[users[1]]["recommendation_id"],
        }
    )
    events.append(
        {
            "user_id": users[3],
            "item_id": shown[users[5]]["items"][0]["item_id"],
            "type": "click",
            "recommendation_id": shown[users[5]]["recommendation_id"],
        }
    )
    events.append({"user_id": users[3], "item_id": "plain"})  # no type, no rid: as before
    stored = client.post("/events", json={"events": events})
    assert stored.json()["accepted"] == len(events)
    entry = raw.xrange(user_keys("cosrec", users[0]).log)[0][1]
    assert entry[b"type"] == b"click"
    assert entry[b"rid"] == shown[users[0]]["recommendation_id"].encode()
    assert b"type" not in raw.xrange(user_keys("cosrec", users[3]).log)[-1][1]

    attribution = read_attribution(raw)
    assert attribution.unmatched == 2
    assert sum(v.served for v in attribution.variants.values()) == 40
    clicks = sum(v.acted.get("click", 0) for v in attribution.variants.values())
    purchases = sum(v.acted.get("purchase", 0) for v in attribution.variants.values())
    assert (clicks, purchases) == (20, 10)
    expected_clicks = {"A": 0, "B": 0}
    for k, body in enumerate(shown.values()):
        if k % 2 == 0:
            expected_clicks[body["variant"]] += 1
    assert {v: c.acted.get("click", 0) for v, c in attribution.variants.items()} == expected_clicks

    metrics = scrape(client)
    attributed = {
        dict(labels)["variant"] + "/" + dict(labels)["type"]: value
        for (name, labels), value in metrics.items()
        if name == "cosrec_attributed_interactions_total"
    }
    assert sum(attributed.values()) == 32  # every stored event with a rid, unmatched included
    assert (
        client.post(
            "/events", json={"events": [{"user_id": "u", "item_id": "i", "type": "like"}]}
        ).status_code
        == 422
    )
    raw.close()


def test_cosrec_experiment_report(make_client, redis_url, other_bundle, capsys):
    client = make_client(variants=f"B={other_bundle}:0.5", experiment_salt="report")
    rng = random.Random(3)
    for k in range(300):
        user = f"s{k}"
        body = client.post("/recommend", json={"user_id": user, "n": 3}).json()
        rate = 0.6 if body["variant"] == "B" else 0.2
        if rng.random() < rate:
            event = {
                "user_id": user,
                "item_id": body["items"][0]["item_id"],
                "type": "click",
                "recommendation_id": body["recommendation_id"],
            }
            client.post("/events", json={"events": [event]})
    drain(client)
    assert cosrec_main(["experiment", "report", "--redis-url", redis_url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    by_variant = {row["variant"]: row for row in report["variants"]}
    assert list(by_variant) == ["A", "B"]
    assert sum(row["served"] for row in by_variant.values()) == 300
    versus = by_variant["B"]["click_through"]["versus_control"]
    assert versus["difference"] > 0.25
    assert versus["p_value"] < 1e-6
    assert cosrec_main(["experiment", "report", "--redis-url", redis_url]) == 0
    table = capsys.readouterr().out
    assert "click-through" in table
    assert "(control)" in table
    assert "p=" in table
    assert cosrec_main(["experiment", "report", "--redis-url", "redis://127.0.0.1:1/0"]) == 2


def test_the_shadow_scores_a_sample_and_never_answers(make_client, bundle_dir, other_bundle):
    same = make_client(shadow_bundle=bundle_dir, shadow_sample=1.0)
    other = make_client(shadow_bundle=other_bundle, shadow_sample=1.0)
    items = json.loads((bundle_dir / "manifest.json").read_text())["items"]
    serving = version_of(bundle_dir)
    for k in range(20):
        user = f"w{k}"
        for client in (same, other):
            client.post("/events", json={"events": [{"user_id": user, "item_id": items[k % 10]}]})
            body = client.post("/recommend", json={"user_id": user, "n": 10}).json()
            assert body["model_version"] == serving
    scored = ("cosrec_shadow_requests_total", (("result", "scored"),))
    for client in (same, other):  # gathered, then scored on a low-priority thread
        wait_until(lambda c=client: scrape(c).get(scored, 0) >= 20, 10.0, "the shadow scored")
    identical = scrape(same)
    assert identical[("cosrec_shadow_top10_overlap_count", (("variant", "A"),))] == 20
    assert identical[("cosrec_shadow_top10_overlap_sum", (("variant", "A"),))] == 20  # all 1.0
    different = scrape(other)
    assert different[("cosrec_shadow_top10_overlap_count", (("variant", "A"),))] == 20
    assert different[("cosrec_shadow_top10_overlap_sum", (("variant", "A"),))] < 20


def test_statistics_against_known_values():
    # Wilson interval of 10/100 (z = 1.96): 0.0552 to 0.1744 (Newcombe 1998, table I style)
    low, high = wilson_interval(10, 100)
    assert math.isclose(low, 0.0552, abs_tol=5e-4)
    assert math.isclose(high, 0.1744, abs_tol=5e-4)
    # 100/1000 against 130/1000: pooled p 0.115, SE sqrt(0.115 * 0.885 * 2/1000) = 0.014267,
    # z = 0.03 / 0.014267 = 2.1027, two-sided p = 2 (1 - Phi(2.1027)) = 0.0355
    result = two_proportion_test(100, 1000, 130, 1000)
    assert math.isclose(result.z, 2.1027, abs_tol=1e-3)
    assert math.isclose(result.p_value, 0.0355, abs_tol=2e-4)
    assert result.low < 0.03 < result.high
    # under the null, about 5% of experiments are "significant" at the 5% level
    rng = random.Random(7)
    positives = 0
    for _ in range(2000):
        a = sum(rng.random() < 0.1 for _ in range(400))
        b = sum(rng.random() < 0.1 for _ in range(400))
        positives += two_proportion_test(a, 400, b, 400).p_value < 0.05
    assert 0.03 < positives / 2000 < 0.07


def test_each_users_record_is_capped_and_expires_with_the_user(
    make_client, redis_url, other_bundle
):
    client = make_client(
        variants=f"B={other_bundle}:0.5", max_recommendations_per_user=3, user_ttl_s=100
    )
    for _ in range(5):
        assert client.post("/recommend", json={"user_id": "capped", "n": 2}).status_code == 200
    drain(client)
    raw = redis.Redis.from_url(redis_url)
    key = recommendations_key("cosrec", "capped")
    assert raw.xlen(key) == 3  # the newest 3 of 5
    assert 0 < raw.pttl(key) <= 100_000


def test_answers_and_events_are_recorded_after_redis_forgets_its_scripts(
    make_client, redis_url, other_bundle
):
    client = make_client(variants=f"B={other_bundle}:0.5")

    def store_event(item: str) -> None:
        event = {"user_id": "flushed", "item_id": item, "timestamp": 1.0}
        stored = client.post("/events", json={"events": [event]})
        assert stored.status_code == 200, stored.text
        assert stored.json()["accepted"] == 1

    first = client.post("/recommend", json={"user_id": "flushed", "n": 2}).json()
    store_event(first["items"][0]["item_id"])
    drain(client)  # both scripts (the record's, the events') are loaded now
    with redis.Redis.from_url(redis_url) as direct:
        direct.script_flush()  # what a restart or a failover to a fresh replica leaves
    second = client.post("/recommend", json={"user_id": "flushed", "n": 2}).json()
    store_event(second["items"][1]["item_id"])
    drain(client)
    with redis.Redis.from_url(redis_url) as direct:
        recorded = [
            fields[REC_ID.encode()].decode()
            for _, fields in direct.xrange(recommendations_key("cosrec", "flushed"))
        ]
        logged = direct.xlen(user_keys("cosrec", "flushed").log)
    assert recorded == [first["recommendation_id"], second["recommendation_id"]]
    assert logged == 2


def test_the_record_writes_the_answers_of_its_gathering_time_in_one_script_call(redis_url):
    async def record_ten_answers_apart() -> int:
        client = aioredis.Redis.from_url(redis_url)
        await client.config_resetstat()
        log = RecommendationLog(client, "cosrec", 100, 0, 2.0, Metrics(), gather_s=0.5)
        writer = asyncio.create_task(log.run())
        users = [f"gathered-{k}" for k in range(10)]
        for k, user in enumerate(users):  # 10 answers over ~50 ms, well inside 0.5 s
            log.record(user, f"A.{k:024x}", "A", ["1", "2"])
            await asyncio.sleep(0.005)
        async with asyncio.timeout(10):  # written when the gathering time is over, no drain
            while sum([await client.xlen(recommendations_key("cosrec", u)) for u in users]) < 10:
                await asyncio.sleep(0.05)
        calls = (await client.info("commandstats"))["cmdstat_evalsha"]["calls"]
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await client.aclose()
        return calls

    assert asyncio.run(record_ten_answers_apart()) == 1
