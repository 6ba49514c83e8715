"""The service follows the registry's pointer (issue 13): with COSREC_BUNDLE=REGISTRY/current,
promotions and rollbacks (by command or POST /admin/rollback) swap what serves, under load,
with no failed request."""

from __future__ import annotations

import json
import shutil
import time

import httpx

from contract.registry import Registry
from cosrec.processes import ServiceProcess
from faults import MixedLoad


def version(bundle) -> str:
    return json.loads((bundle / "manifest.json").read_text())["model_version"]


def served(service: ServiceProcess) -> str:
    return httpx.post(service.url + "/recommend", json={"user_id": "u1"}).json()["model_version"]


def wait_for_version(service: ServiceProcess, wanted: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while served(service) != wanted:
        assert time.monotonic() < deadline, f"still serving {served(service)}, not {wanted}"
        time.sleep(0.05)


def test_promotions_and_rollbacks_under_load_fail_no_request(
    main_bundle, other_bundle, redis_url, tmp_path
):
    registry = Registry(tmp_path / "registry")
    for source in (main_bundle, other_bundle):
        shutil.copytree(source, tmp_path / source.name)
        registry.add(tmp_path / source.name)
    first, second = version(main_bundle), version(other_bundle)
    registry.promote(first, "test")
    service = ServiceProcess.start(
        registry.pointer, redis_url, ready_route="/readyz", reload_poll_s="0.1"
    )
    try:
        items = json.loads((main_bundle / "manifest.json").read_text())["items"]
        with MixedLoad(service.url, items, clients=3) as load:
            time.sleep(0.5)
            registry.promote(second, "test")
            wait_for_version(service, second)
            answer = httpx.post(service.url + "/admin/rollback", timeout=30)  # to `first`
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"reloaded": True, "model_version": first}
            assert registry.serving_version() == first
            registry.promote(second, "test")
            wait_for_version(service, second)
            time.sleep(0.5)
            outcomes = load.stop()
    finally:
        service.stop()
    assert outcomes
    assert all(o.status == 200 for o in outcomes), {o.status for o in outcomes}
    versions = {o.body["model_version"] for o in outcomes if o.route == "recommend"}
    assert versions == {first, second}


def test_rollback_without_a_registry_is_refused_with_409(client):
    answer = client.post("/admin/rollback", json={"version": "anything"})
    assert answer.status_code == 409
    assert "pointer" in answer.json()["error"]
