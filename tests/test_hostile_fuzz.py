"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis):
valid and invalid requests to every operation of a real `cosrec serve`; never a 5xx, and every
4xx says why."""

from __future__ import annotations

from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from cosrec.processes import ServiceProcess

API_KEY = "fuzz-key-" + "Qv7w" * 6
# Examples per operation and per mode (valid, invalid): 2,000 requests in all. Reload loads the
# model each time and has only its header to vary, so it gets fewer.
EXAMPLES = {"/recommend": 400, "/events": 500, "/admin/reload": 100}


@pytest.fixture(scope="module")
def fuzzed_service(main_bundle, redis_process, tmp_path_factory):
    service = ServiceProcess.start(
        main_bundle,
        redis_process.url,
        log_path=tmp_path_factory.mktemp("fuzz") / "service.log",
        ready_route="/readyz",
        api_key=API_KEY,
        reload_poll_s="0",
    )
    yield service
    service.stop()


def test_no_generated_request_gets_a_server_error(fuzzed_service):
    schema = schemathesis.openapi.from_url(fuzzed_service.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/recommend", "/events", "/admin/reload"}
    answered: Counter[tuple[str, int]] = Counter()
    with requests.Session() as session:
        for operation in operations:
            # an operation without parameters or body has no invalid variant to generate
            negatable = bool(operation.body) or any(True for _ in operation.iter_parameters())
            modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negatable else [])
            for mode in modes:
                _fuzz(operation, mode, session, fuzzed_service.url, answered)
    total = sum(answered.values())
    print(f"{total} generated requests: {sorted(answered.items())}")
    assert total >= 2000
    assert not [key for key in answered if key[1] >= 500]
    assert fuzzed_service.process.poll() is None


def _fuzz(operation, mode, session, base_url, answered) -> None:
    @settings(
        max_examples=EXAMPLES.get(operation.path, 10),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        # one call in four goes without the key: the 401 path runs, the others reach validation
        keyless = sum(answered.values()) % 4 == 0
        headers = {} if keyless else {"Authorization": f"Bearer {API_KEY}"}
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        answered[(f"{case.method} {case.path}", response.status_code)] += 1
        assert response.status_code < 500, (case.method, case.path, case.body, response.text)
        if 400 <= response.status_code < 500:  # it says why: `detail`, or an admin's `error`
            body = response.json()
            assert body.get("detail") or body.get("error"), response.text

    run()
