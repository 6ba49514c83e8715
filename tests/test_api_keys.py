"""API keys (issue 12, hole 5): the write key guards /events and /admin, a read key guards
/recommend when set (the write key opens it too), every check compares in constant time, and
an empty key is a start-up error, never "auth off"."""

from __future__ import annotations

import hmac
import subprocess
import sys

import pytest

from conftest import REPO
from cosrec.processes import free_port, service_env

WRITE_KEY = "write-" + "Xk2p" * 8
READ_KEY = "read-" + "Qw7z" * 8
EVENT = {"events": [{"user_id": "k", "item_id": "i1"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(make_client):
    return make_client(api_key=WRITE_KEY, read_api_key=READ_KEY)


def test_with_a_read_key_recommend_needs_the_read_or_the_write_key(keyed):
    assert keyed.post("/recommend", json={"user_id": "k"}).status_code == 401
    assert (
        keyed.post("/recommend", json={"user_id": "k"}, headers=bearer("wrong")).status_code == 401
    )
    for key in (READ_KEY, WRITE_KEY):
        assert (
            keyed.post("/recommend", json={"user_id": "k"}, headers=bearer(key)).status_code == 200
        )


def test_the_read_key_does_not_open_writes_or_admin(keyed):
    assert keyed.post("/events", json=EVENT, headers=bearer(READ_KEY)).status_code == 401
    assert keyed.post("/admin/reload", headers=bearer(READ_KEY)).status_code == 401
    assert keyed.post("/events", json=EVENT, headers=bearer(WRITE_KEY)).status_code == 200


def test_health_metrics_and_docs_stay_open(keyed):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path


def test_every_key_check_goes_through_compare_digest(keyed, monkeypatch):
    """Behaviour, not source text: each request's key is compared by hmac.compare_digest, so
    a comparison with == or != (whose time depends on the matching prefix) fails this."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    keyed.post("/events", json=EVENT, headers=bearer("nope"))
    assert (b"nope", WRITE_KEY.encode()) in compared
    compared.clear()
    keyed.post("/recommend", json={"user_id": "k"}, headers=bearer(WRITE_KEY))
    # both keys are compared, whichever matches: the time does not tell which one was tried
    assert {expected for _, expected in compared} == {READ_KEY.encode(), WRITE_KEY.encode()}


@pytest.mark.parametrize("variable", ["COSREC_API_KEY", "COSREC_READ_API_KEY"])
def test_an_empty_key_is_a_start_up_error(main_bundle, variable):
    env = service_env(main_bundle, f"redis://127.0.0.1:{free_port()}/0")
    env[variable] = ""
    result = subprocess.run(
        [sys.executable, "-m", "cosrec", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "is empty" in result.stderr
