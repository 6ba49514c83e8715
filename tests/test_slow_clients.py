"""Slow and vanishing clients against a real `cosrec serve` (issue 12, holes 8 and 9): a client
that sends nothing, half a head or half a body is disconnected after the read timeout; one that
leaves mid-body is counted as 499 with one log line, not as a 500 with a traceback; and SIGTERM
ends the service within its shutdown timeout even with a half-sent request open."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

from cosrec.processes import ServiceProcess

READ_TIMEOUT_S = 1.0
PARTS = {
    "nothing": b"",
    "half a head": b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Ty",
    "half a body": (
        b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"user_id": '
    ),
}


@pytest.fixture
def service(bundle_dir, redis_url, tmp_path):
    running = ServiceProcess.start(
        bundle_dir,
        redis_url,
        log_path=tmp_path / "service.log",
        log_level="info",
        request_read_timeout_s=str(READ_TIMEOUT_S),
        keep_alive_s="1",
        shutdown_timeout_s="2",
        reload_poll_s="0",
    )
    yield running
    running.stop()


def closed_by_server_within(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the server closed the connection (recv gives b"")."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    while sock.recv(4096):
        pass
    return time.monotonic() - started


@pytest.mark.parametrize("part", list(PARTS))
def test_a_client_that_does_not_send_a_whole_request_is_disconnected(service, part):
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(PARTS[part])
        waited = closed_by_server_within(sock, 10 * READ_TIMEOUT_S)
    assert READ_TIMEOUT_S * 0.9 <= waited < 5 * READ_TIMEOUT_S


def test_an_idle_kept_alive_connection_is_closed(service):
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert closed_by_server_within(sock, 10) < 5


def test_a_client_leaving_mid_body_is_counted_as_499_with_one_log_line(service):
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(PARTS["half a body"])
        time.sleep(0.2)  # the request has reached the app, which waits for the rest
    time.sleep(0.5)
    metrics = httpx.get(service.url + "/metrics").text
    assert 'route="/recommend",status="499"' in metrics
    assert 'status="500"' not in metrics
    log = service.log_text()
    assert "Traceback" not in log
    assert log.count("closed the connection before the answer") == 1


def test_sigterm_ends_the_service_within_its_shutdown_timeout_despite_a_half_sent_body(
    service,
):
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(PARTS["half a body"])
        time.sleep(0.2)
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(15)
        assert time.monotonic() - started < 2 + 3  # the shutdown timeout, and some slack
