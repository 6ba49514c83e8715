"""`cosrec demo` end to end, as a user runs it: a real process that trains, starts Redis and the
service, answers over real HTTP, keeps serving until interrupted, then stops what it started."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "Ctrl-C stops the service"
DEMO_TIMEOUT_S = 120


def _demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cosrec", "demo", *args]


def _demo_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COSREC_")}
    env["OMP_NUM_THREADS"] = "1"  # the CI machine has 2 cores
    return env


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _read_until_ready(process: subprocess.Popen, deadline: float) -> list[str]:
    lines: list[str] = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break  # the demo exited
        lines.append(line)
        if READY_LINE in line:
            return lines
    pytest.fail("the demo never became ready:\n" + "".join(lines[-30:]))


@pytest.mark.timeout(240)
def test_demo_serves_until_interrupted_then_stops_everything(tmp_path: Path) -> None:
    command = _demo_command(
        "--epochs", "1", "--users", "60", "--items", "40", "--port", "0",
        "--workdir", str(tmp_path),
    )  # fmt: skip
    # A suite run as a background job has SIGINT ignored, and a child would inherit that: the
    # demo starts with the signal caught here (a caught signal is reset to its default on exec),
    # so Ctrl-C reaches it as a user's terminal would send it. Its own process group lets a
    # failed check stop the Redis and service it started too.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_demo_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        _check_running_demo(process, tmp_path)
    finally:
        if process.poll() is None:  # a failed check: still stop the demo and its children
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # none left: the demo stopped them all
            os.killpg(process.pid, signal.SIGKILL)


def _check_running_demo(process: subprocess.Popen, workdir: Path) -> None:
    lines = _read_until_ready(process, time.monotonic() + DEMO_TIMEOUT_S)
    output = "".join(lines)

    # The sample requests it printed: the replayed user is scored by the model, a stranger
    # gets the popularity ranking, both from the bundle the demo just trained.
    answers = [json.loads(line[len("<- 200 ") :]) for line in lines if line.startswith("<- 200 ")]
    assert [answer.get("source") for answer in answers] == [None, "model", "popularity"]
    manifest = json.loads((workdir / "bundle" / "manifest.json").read_text())
    assert answers[1]["model_version"] == manifest["model_version"]
    assert len(answers[1]["items"]) == 5

    # It keeps serving: a request of our own, over real HTTP, to the URL it printed.
    base_url = re.search(r"service ready at (http://\S+)", output).group(1)
    port = int(base_url.rsplit(":", 1)[1])
    request = urllib.request.Request(
        base_url + "/recommend",
        data=json.dumps({"user_id": "u1", "n": 3}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert len(json.loads(response.read())["items"]) == 3

    # Ctrl-C: the demo exits cleanly and nothing it started is left listening.
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert not _port_open(port)
    own_redis = re.search(r"started redis-server on port (\d+)", output)
    if own_redis:  # where a Redis was already reachable, the demo used it and started none
        assert not _port_open(int(own_redis.group(1)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/log.csv"], "no such file"),
        (["--epochs", "0"], "must be positive"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_demo_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        _demo_command(*args), cwd=ROOT, env=_demo_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("cosrec demo: ")
    assert message in result.stderr
