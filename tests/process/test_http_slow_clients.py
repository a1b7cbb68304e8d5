"""Clients that send or read too slowly, and bodies that are too large.

A slow request body gets 408 after ``timeout_request_body`` without a byte; a
client that reads nothing of its response is dropped after ``timeout_write``
while backpressure keeps the worker's memory flat; a body above
``max_body_size`` gets 413 before the app sees it. None of them holds up
anyone else.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from helpers import RawConnection, only_worker, running_server, server_view, wait_until

BODY_TIMEOUT = 1.0
WRITE_TIMEOUT = 1.5
MAX_BODY = 4096
H = b"Host: x\r\n"


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    with running_server(
        tmp_path_factory.mktemp("slow"),
        "httpapp:app",
        *("--workers", "1"),
        *("--timeout-request-body", str(BODY_TIMEOUT)),
        *("--timeout-write", str(WRITE_TIMEOUT)),
        *("--max-body-size", str(MAX_BODY)),
        *("--timeout-keep-alive", "5"),
    ) as server:
        yield server


@pytest.fixture
def slow(slow_server, request):
    with server_view(slow_server, request) as view:
        yield view


def calls(server, route: str) -> int:
    return server.output().count(f"CALL POST {route}") + server.output().count(f"CALL GET {route}")


def read_to_end(sock: socket.socket) -> int:
    """Read until EOF or a reset (within a deadline); return the byte count."""
    sock.settimeout(5)
    total = 0
    try:
        while data := sock.recv(1 << 20):
            total += len(data)
    except ConnectionResetError:
        pass
    return total


# -- slow request bodies ------------------------------------------------------------------


def test_stalled_body_gets_408_and_the_app_sees_a_disconnect(slow):
    with RawConnection((slow.host, slow.port), timeout=BODY_TIMEOUT + 5) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\n" + b"x" * 10)
        started = time.monotonic()
        response = conn.read_response()
        waited = time.monotonic() - started
        assert response.status == 408
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert BODY_TIMEOUT <= waited < BODY_TIMEOUT + 2.5
    wait_until(lambda: "no request body for" in slow.output(), timeout=5)
    assert "Traceback" not in slow.output()


def test_stalled_chunked_body_gets_408(slow):
    with RawConnection((slow.host, slow.port), timeout=BODY_TIMEOUT + 5) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel")
        assert conn.read_response().status == 408
        assert conn.is_closed_by_server()


def test_a_body_that_keeps_coming_is_not_cut(slow):
    # Each part arrives within the timeout; the whole takes several timeouts.
    parts = 6
    with RawConnection((slow.host, slow.port), timeout=10) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % parts)
        for _ in range(parts):
            time.sleep(BODY_TIMEOUT / 2)
            conn.send(b"x")
        response = conn.read_response()
    assert response.status == 200
    assert response.body == b"x" * parts


def test_an_app_slow_to_read_is_not_the_clients_fault(start_server):
    # The app waits before reading a body larger than the read buffer: asgid
    # stops reading meanwhile, and that wait is not counted against the client.
    server = start_server("httpapp:app", "--timeout-request-body", str(BODY_TIMEOUT))
    body = b"y" * 1_000_000
    hold = BODY_TIMEOUT * 2.5
    response = httpx.post(f"{server.url}/slow-read?hold={hold}", content=body, timeout=10)
    assert response.status_code == 200
    assert response.text == str(len(body))


def test_expect_continue_waits_for_the_app_before_the_body_clock_starts(slow):
    with RawConnection((slow.host, slow.port), timeout=10) as conn:
        wait = BODY_TIMEOUT * 2.5
        conn.send(
            b"POST /expect?wait=%g HTTP/1.1\r\n" % wait
            + H
            + b"Content-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = conn.read_response()
        assert interim.status == 100
        conn.send(b"abc")
        response = conn.read_response()
    assert response.status == 200
    assert response.body == b"got 3"


def test_a_stalled_body_does_not_hold_up_other_clients(slow):
    stalled = []
    try:
        for _ in range(20):
            sock = socket.create_connection((slow.host, slow.port))
            sock.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\nab")
            stalled.append(sock)
        with httpx.Client(timeout=2) as client:
            for _ in range(5):
                assert client.get(slow.url + "/").status_code == 200

        def all_answered() -> bool:
            for sock in stalled:
                sock.settimeout(0.01)
                try:
                    if sock.recv(65536) == b"":
                        continue
                except TimeoutError:
                    return False
                except OSError:
                    continue
                return False
            return True

        wait_until(all_answered, timeout=BODY_TIMEOUT + 5, interval=0.2)
    finally:
        for sock in stalled:
            sock.close()


# -- max_body_size --------------------------------------------------------------------------


def test_declared_body_over_the_limit_is_413_before_the_app(slow):
    with RawConnection((slow.host, slow.port)) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        response = conn.read_response()
        assert response.status == 413
        assert b"max_body_size" in response.body
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert calls(slow, "/echo") == 0


def test_body_at_the_limit_is_served(slow):
    response = httpx.post(slow.url + "/echo", content=b"z" * MAX_BODY)
    assert response.status_code == 200
    assert len(response.content) == MAX_BODY


def test_chunked_body_over_the_limit_is_413(slow):
    chunk = b"c" * 1024
    with RawConnection((slow.host, slow.port)) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(MAX_BODY // len(chunk) + 1):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        response = conn.read_response()
        assert response.status == 413
        assert conn.is_closed_by_server()
    assert "Traceback" not in slow.output()


def test_a_client_uploading_a_refused_body_still_reads_the_413(slow):
    # httpx writes the whole body before it reads: asgid must not reset the
    # connection under it while the upload is still arriving.
    body = b"u" * (8 * 1024 * 1024)
    for _ in range(3):
        response = httpx.post(slow.url + "/echo", content=body, timeout=10)
        assert response.status_code == 413
    assert calls(slow, "/echo") == 0


def test_expect_continue_over_the_limit_gets_413_instead_of_100(slow):
    with RawConnection((slow.host, slow.port)) as conn:
        conn.send(
            b"POST /expect HTTP/1.1\r\n"
            + H
            + b"Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n"
        )
        assert conn.read_response().status == 413
        assert conn.is_closed_by_server()


# -- clients that read nothing -----------------------------------------------------------


def test_a_client_that_never_reads_is_dropped_and_memory_stays_flat(slow):
    worker = only_worker(slow.server.pid)
    rss_before = worker.memory_info().rss
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect((slow.host, slow.port))
        sock.sendall(b"GET /produce?mb=512 HTTP/1.1\r\n" + H + b"\r\n")
        wait_until(lambda: "CALL GET /produce" in slow.output(), timeout=5)
        wait_until(lambda: "it read nothing for" in slow.output(), timeout=WRITE_TIMEOUT + 5)
        rss_after = worker.memory_info().rss
        # The app was paused by backpressure: it made a few MiB at most, not 512.
        produced = [line for line in slow.output().splitlines() if "EVENT produced" in line]
        assert len(produced) <= 8, produced[-1]
        assert rss_after - rss_before < 16 * 1024 * 1024
        # What the kernels buffered can still be read; then the connection ends.
        assert read_to_end(sock) < 64 * 1024 * 1024
    finally:
        sock.close()
    assert httpx.get(slow.url + "/").status_code == 200
    assert "Traceback" not in slow.output()


def test_a_client_that_reads_slowly_is_not_dropped(slow):
    # Reading a little every now and then (less often than the write timeout
    # but steadily) is progress: the response completes.
    total = 4 * 1024 * 1024
    received = 0
    with socket.create_connection((slow.host, slow.port)) as sock:
        sock.sendall(b"GET /produce?mb=4 HTTP/1.1\r\n" + H + b"\r\n")
        sock.settimeout(10)
        time.sleep(WRITE_TIMEOUT / 2)
        deadline = time.monotonic() + 30
        while received < total and time.monotonic() < deadline:
            data = sock.recv(256 * 1024)
            if not data:
                break
            received += len(data)
            time.sleep(0.02)
    assert received >= total
    assert "it read nothing for" not in slow.output()


# -- bodies the app did not read ---------------------------------------------------------------


def test_keep_alive_timeout_waits_for_an_unread_body_to_end(start_server):
    # The app answers at once without reading; the body takes several
    # keep-alive timeouts to arrive: the connection is not idle meanwhile.
    server = start_server("httpapp:app", "--timeout-keep-alive", "1")
    parts = 5
    with RawConnection((server.host, server.port), timeout=10) as conn:
        conn.send(b"POST /no-read HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % parts)
        assert conn.read_response().status == 200
        for _ in range(parts):
            time.sleep(0.5)
            conn.send(b"x")
        conn.send(b"GET /after HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_response().status == 200


def test_an_unread_upload_on_a_closing_connection_is_not_reset(start_server):
    # Connection: close and an app that answers without reading: asgid closes
    # after the answer, but gently, so httpx (which uploads everything before
    # it reads) gets the 200 rather than a reset.
    server = start_server("httpapp:app")
    body = b"u" * (8 * 1024 * 1024)
    for _ in range(3):
        response = httpx.post(
            server.url + "/no-read", content=body, headers={"connection": "close"}, timeout=10
        )
        assert response.status_code == 200
