"""Static guards on the deployment files: what the images may contain and which images the
compose stack may name. The real build and run of the stack is .ci/compose-e2e.sh."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Public images that CI can stand in for (../shared/tools/standin-images.sh); anything else
# must sit in a compose profile that CI does not start.
STANDIN_IMAGE = re.compile(
    r"^(python:3\.11[\w.-]*|redis:7\.\d+[\w.-]*|prom/prometheus:v2\.\d+\.\d+)$"
)


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"]


def test_serving_image_installs_no_torch() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile.api").read_text()
    assert re.search(r"^ARG EXTRA=serve$", dockerfile, re.MULTILINE)
    for extra in ("serve", "gpu"):
        assert not any(re.match(r"torch\b", dep) for dep in _extras()[extra]), extra
    # Only the contract, the service and the commands go into the image, not model/ or training/.
    copied = re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE)
    assert set(copied) == {"pyproject.toml", "contract", "cosrec", "service"}


def test_default_stack_names_only_pinned_images_ci_can_stand_in_for() -> None:
    services = _compose()["services"]
    default = {name: spec for name, spec in services.items() if not spec.get("profiles")}
    assert set(default) == {"redis", "trainer", "api", "prometheus"}
    for name, spec in default.items():
        if "build" in spec:  # built here, from a base image the Dockerfile pins
            dockerfile = (ROOT / spec["build"]["dockerfile"]).read_text()
            (base,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
            assert STANDIN_IMAGE.match(base), (name, base)
        else:
            assert STANDIN_IMAGE.match(spec["image"]), (name, spec["image"])
    for name, spec in services.items():
        assert ":" in spec["image"], name
        assert not spec["image"].endswith(":latest"), name


def test_api_waits_for_redis_and_a_trained_bundle() -> None:
    services = _compose()["services"]
    assert services["api"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "trainer": {"condition": "service_completed_successfully"},
    }
    assert "healthcheck" in services["redis"]
    api_bundle = services["api"]["environment"]["COSREC_BUNDLE"]
    trainer_volumes = [volume.split(":") for volume in services["trainer"]["volumes"]]
    api_volumes = [volume.split(":") for volume in services["api"]["volumes"]]
    assert ["bundles", "/bundles"] in trainer_volumes
    assert ["bundles", "/bundles", "ro"] in api_volumes
    assert api_bundle.startswith("/bundles/")
    prometheus = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["api:8000"]


def test_build_context_leaves_out_environments_and_data() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", "docker/data", "bench", "tests", "**/*.csv"} <= ignored


def test_compose_publishes_ports_on_loopback_unless_told_otherwise() -> None:
    services = _compose()["services"]
    for name, spec in services.items():
        for port in spec.get("ports", []):
            assert port.startswith("${COSREC_BIND:-127.0.0.1}:"), (name, port)
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--maxmemory-policy") + 1] == "noeviction"
