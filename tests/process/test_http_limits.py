"""Limits that protect a worker: header timeout, head sizes, concurrency, idle time."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from helpers import RawConnection, raw_request, running_server, server_view, wait_until

KEEP_ALIVE = 1.5
HEADER_TIMEOUT = 1.0
MAX_HEADER_SIZE = 1024
MAX_REQUEST_LINE = 512
MAX_HEADERS = 20


@pytest.fixture(scope="module")
def timeouts_server(tmp_path_factory):
    with running_server(
        tmp_path_factory.mktemp("timeouts"),
        "httpapp:app",
        *("--timeout-keep-alive", str(KEEP_ALIVE)),
        *("--timeout-request-header", str(HEADER_TIMEOUT)),
    ) as server:
        yield server


@pytest.fixture
def timeouts(timeouts_server, request):
    with server_view(timeouts_server, request) as view:
        yield view


@pytest.fixture(scope="module")
def sizes_server(tmp_path_factory):
    with running_server(
        tmp_path_factory.mktemp("sizes"),
        "httpapp:app",
        *("--max-header-size", str(MAX_HEADER_SIZE)),
        *("--max-request-line", str(MAX_REQUEST_LINE)),
        *("--max-headers", str(MAX_HEADERS)),
    ) as server:
        yield server


@pytest.fixture
def sizes(sizes_server, request):
    with server_view(sizes_server, request) as view:
        yield view


def calls(server) -> int:
    return server.output().count("CALL ")


def assert_rejected(server, request: bytes, status: int) -> None:
    with RawConnection((server.host, server.port)) as conn:
        conn.send(request)
        response = conn.read_response()
        assert response.status == status, response.body
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert calls(server) == 0
    assert httpx.get(server.url + "/").status_code == 200


# -- request header timeout (slowloris) ------------------------------------------------


def test_slowloris_partial_head_is_closed_after_the_timeout(timeouts):
    server = timeouts
    with RawConnection((server.host, server.port), timeout=10) as slow:
        slow.send(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        # Another client is served while the slow one dawdles.
        assert httpx.get(server.url + "/").text == "Hello, world!"
        slow.send(b"a")
        assert slow.is_closed_by_server()
        elapsed = time.monotonic() - started
    assert HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + 3
    assert "CALL GET /slow" not in server.output()


def test_slowloris_byte_by_byte_does_not_reset_the_timeout(timeouts):
    server = timeouts
    head = b"GET /slow HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 200
    with RawConnection((server.host, server.port), timeout=10) as slow:
        started = time.monotonic()
        closed = False
        for i in range(len(head)):  # bounded by the head's size
            try:
                slow.send(head[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if time.monotonic() - started > 8:
                break
            time.sleep(0.01)
        assert closed or slow.is_closed_by_server()
        assert time.monotonic() - started < HEADER_TIMEOUT + 3
    assert "CALL" not in server.output()


def test_idle_connection_without_a_request_is_closed(timeouts):
    with RawConnection((timeouts.host, timeouts.port), timeout=10) as conn:
        started = time.monotonic()
        assert conn.is_closed_by_server()
        assert time.monotonic() - started < HEADER_TIMEOUT + 3


def test_keep_alive_connection_survives_within_the_timeout(timeouts):
    with RawConnection((timeouts.host, timeouts.port), timeout=KEEP_ALIVE - 0.6) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200
        assert not conn.is_closed_by_server()  # still open after KEEP_ALIVE - 0.6 s
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200


def test_timeouts_close_idle_connections_never_early(timeouts):
    """Idle connections close after their full timeout, whatever the phase of the tick.

    Connections opened at spread-out moments: some idle after a response
    (keep-alive timeout), some stuck in a request head (header timeout).
    """
    server = timeouts
    conns: list[tuple[RawConnection, float, float]] = []
    try:
        for _ in range(4):
            idle = RawConnection((server.host, server.port), timeout=10)
            conns.append((idle, 0.0, KEEP_ALIVE))
            idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            idle.read_response()
            conns[-1] = (idle, time.monotonic(), KEEP_ALIVE)
            partial = RawConnection((server.host, server.port), timeout=10)
            partial.send(b"GET /partial HTTP/1.1\r\n")
            conns.append((partial, time.monotonic(), HEADER_TIMEOUT))
            time.sleep(0.25)  # spread over a tick (not a sync point)
        for conn, since, timeout in conns:
            assert conn.is_closed_by_server()
            waited = time.monotonic() - since
            assert waited >= timeout - 0.1, f"closed after {waited:.2f}s of a {timeout}s timeout"
            assert waited < timeout + 3
    finally:
        for conn, _, _ in conns:
            conn.sock.close()
    assert "CALL GET /partial" not in server.output()


def test_timeouts_do_not_cut_a_slow_response(timeouts):
    with RawConnection((timeouts.host, timeouts.port), timeout=10) as conn:
        conn.send(b"GET /sleep?s=%.1f HTTP/1.1\r\nHost: x\r\n\r\n" % (KEEP_ALIVE + 1))
        assert conn.read_response().body == b"slept"
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200


# -- sizes -----------------------------------------------------------------------------


def test_max_header_size_431(sizes):
    ok = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 800 + b"\r\n\r\n"
    assert raw_request(sizes, ok).status == 200
    wait_until(lambda: calls(sizes) == 1, timeout=5)
    big = b"GET /never HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n"
    with RawConnection((sizes.host, sizes.port)) as conn:
        conn.send(big)
        response = conn.read_response()
        assert response.status == 431
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert "CALL GET /never" not in sizes.output()
    assert httpx.get(sizes.url + "/").status_code == 200


def test_max_header_size_counts_many_small_headers(sizes):
    # 15 headers: under max_headers, but together over max_header_size.
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"X-Pad: " + b"p" * 80 + b"\r\n") * 15 + b"\r\n"
    assert_rejected(sizes, request, 431)


def test_max_header_size_counts_the_request_line(sizes):
    request = b"GET /" + b"a" * 500 + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 600 + b"\r\n\r\n"
    assert_rejected(sizes, request, 431)


def test_unterminated_huge_header_is_refused_without_buffering(sizes):
    # A header line that never ends must not be buffered until the timeout.
    with RawConnection((sizes.host, sizes.port), timeout=10) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        started = time.monotonic()
        sent = 0
        try:
            while sent < 16 * 1024 * 1024 and time.monotonic() - started < 8:
                conn.send(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = conn.read_until_closed()
        assert time.monotonic() - started < 9
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    assert "CALL" not in sizes.output()


def test_unterminated_huge_header_name_is_refused(sizes):
    with RawConnection((sizes.host, sizes.port), timeout=10) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(64):
                conn.send(b"X" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = conn.read_until_closed()
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]


def test_pipelined_small_requests_in_one_large_write_are_not_refused(sizes):
    # Many complete heads in one read must not add up to "too large".
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    count = 40
    with RawConnection((sizes.host, sizes.port), timeout=10) as conn:
        conn.send(request * count)
        for _ in range(count):
            assert conn.read_response().status == 200


def test_max_request_line_414(sizes):
    ok = b"GET /" + b"a" * 400 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert raw_request(sizes, ok).status == 200
    wait_until(lambda: calls(sizes) == 1, timeout=5)
    request = b"GET /" + b"a" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    with RawConnection((sizes.host, sizes.port)) as conn:
        conn.send(request)
        response = conn.read_response()
        assert response.status == 414
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert calls(sizes) == 1
    assert httpx.get(sizes.url + "/").status_code == 200


def test_max_request_line_counts_the_query(sizes):
    assert_rejected(sizes, b"GET /?" + b"q" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)


def test_max_headers_431(sizes):
    fields = b"X-A: b\r\n" * (MAX_HEADERS - 1)  # plus Host: exactly the limit
    assert raw_request(sizes, b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n").status == 200
    wait_until(lambda: calls(sizes) == 1, timeout=5)
    with RawConnection((sizes.host, sizes.port)) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"X-One-Too-Many: c\r\n\r\n")
        response = conn.read_response()
        assert response.status == 431
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert calls(sizes) == 1


# -- concurrency -----------------------------------------------------------------------


def test_limit_concurrency_503(start_server):
    server = start_server("httpapp:app", "--limit-concurrency", "2")
    results: list[int] = []

    def slow() -> None:
        results.append(httpx.get(server.url + "/sleep?s=1", timeout=10).status_code)

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: server.output().count("CALL GET /sleep") == 2, timeout=5)
        with RawConnection((server.host, server.port)) as conn:
            conn.send(b"GET /over HTTP/1.1\r\nHost: x\r\n\r\n")
            response = conn.read_response()
            assert response.status == 503
            assert response.header("connection") == "close"
            assert conn.is_closed_by_server()
        assert "CALL GET /over" not in server.output()
    finally:
        for thread in threads:
            thread.join(10)
    assert results == [200, 200]
    # Once the slow requests are done, requests are served again.
    assert httpx.get(server.url + "/after").status_code == 200


def test_limit_concurrency_counts_requests_not_connections(start_server):
    server = start_server("httpapp:app", "--limit-concurrency", "1")
    # Idle keep-alive connections do not use up the limit.
    sockets = [socket.create_connection((server.host, server.port)) for _ in range(3)]
    try:
        with httpx.Client() as client:
            for _ in range(3):
                assert client.get(server.url + "/").status_code == 200
    finally:
        for sock in sockets:
            sock.close()
