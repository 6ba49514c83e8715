"""Bundles published under a mixed load: corrupt ones are refused while the old one serves,
a valid one is swapped in; no request fails either way (real `cosrec serve` processes)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from contract.bundle import Manifest
from cosrec.processes import ServiceProcess
from faults import MixedLoad


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def publish(source: Path, target: Path, spoil: Callable[[Path], None] | None = None) -> None:
    """Replace `target` the way export does (build beside it, then rename), spoiled if asked."""
    staging = target.with_name(target.name + ".staging")
    shutil.copytree(source, staging)
    if spoil is not None:
        spoil(staging)
    retired = target.with_name(target.name + ".retired")
    target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired)


def edit_manifest(bundle: Path, **changes: object) -> None:
    (bundle / "manifest.json").write_text(json.dumps({**manifest(bundle), **changes}))


def truncate_onnx(bundle: Path) -> None:
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) // 2])


def truncate_onnx_with_matching_sha(bundle: Path) -> None:
    """Past the checksum and the identity: the ONNX parser itself must refuse it."""
    truncate_onnx(bundle)
    digest = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    fields = {**manifest(bundle), "onnx_sha256": digest}
    del fields["model_version"]
    (bundle / "manifest.json").write_text(Manifest.create(**fields).to_json())


def request_outcomes(outcomes) -> Counter:
    return Counter((o.route, o.status) for o in outcomes)


def test_corrupt_bundles_are_refused_under_load(main_bundle, long_bundle, redis_url, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(main_bundle, bundle)
    old = manifest(bundle)["model_version"]
    corruptions: list[tuple[Path, Callable[[Path], None] | None, str]] = [
        (main_bundle, truncate_onnx, "sha256"),
        (main_bundle, truncate_onnx_with_matching_sha, "model.onnx does not load"),
        (main_bundle, lambda b: edit_manifest(b, onnx_sha256="0" * 64), "model_version"),
        (main_bundle, lambda b: edit_manifest(b, format_version=3), "format_version"),
        (long_bundle, None, "sequence_length 6"),  # a valid bundle, but reading L=6, not 5
    ]
    service = ServiceProcess.start(
        bundle,
        redis_url,
        log_path=tmp_path / "service.log",
        ready_route="/readyz",
        reload_poll_s="0",
    )
    try:
        with MixedLoad(service.url, manifest(bundle)["items"], clients=4) as load:
            refusals = []
            for source, spoil, _ in corruptions:
                time.sleep(0.3)
                publish(source, bundle, spoil)
                refusals.append(httpx.post(service.url + "/admin/reload", timeout=30))
            time.sleep(0.5)
            outcomes = load.stop()
    finally:
        service.stop()

    for reply, (_, _, reason) in zip(refusals, corruptions, strict=True):
        assert reply.status_code == 409
        assert reply.json()["reloaded"] is False
        assert reply.json()["model_version"] == old
        assert reason in reply.json()["error"]
    assert all(o.status == 200 for o in outcomes), request_outcomes(outcomes)
    versions = {o.body["model_version"] for o in outcomes if o.route == "recommend"}
    assert versions == {old}
    print(f"requests during five refused reloads: {request_outcomes(outcomes)}")


def test_valid_bundle_swapped_in_under_load_with_two_workers(
    main_bundle, other_bundle, redis_url, tmp_path
):
    """Each worker's watcher picks the new bundle up; /admin/reload reaches one worker only."""
    bundle = tmp_path / "bundle"
    shutil.copytree(main_bundle, bundle)
    old, new = manifest(main_bundle)["model_version"], manifest(other_bundle)["model_version"]
    assert old != new
    service = ServiceProcess.start(
        bundle,
        redis_url,
        log_path=tmp_path / "service.log",
        ready_route="/readyz",
        workers=2,
        reload_poll_s="0.2",
    )
    try:
        with MixedLoad(service.url, manifest(bundle)["items"], clients=4) as load:
            time.sleep(1.0)
            published_at = time.monotonic()
            publish(other_bundle, bundle)
            time.sleep(3.0)  # many watcher periods
            settled_at = time.monotonic()
            time.sleep(1.0)
            outcomes = load.stop()
        explicit = httpx.post(service.url + "/admin/reload", timeout=30)
    finally:
        service.stop()

    assert all(o.status == 200 for o in outcomes), request_outcomes(outcomes)
    served = [(o.sent, o.body["model_version"]) for o in outcomes if o.route == "recommend"]
    assert {v for t, v in served if t < published_at} == {old}
    assert {v for t, v in served if t > settled_at} == {new}
    assert {v for _, v in served} == {old, new}
    assert explicit.status_code == 200
    assert explicit.json() == {"reloaded": True, "model_version": new}
    print(f"requests across the swap: {request_outcomes(outcomes)}")
