"""Limits that protect a worker: header timeout, head sizes, concurrency, idle time."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from conftest import RawConnection, raw_request, wait_until


def assert_rejected(server, request: bytes, status: int) -> None:
    with RawConnection((server.host, server.port)) as conn:
        conn.send(request)
        response = conn.read_response()
        assert response.status == status, response.body
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert "CALL" not in server.output()
    assert httpx.get(server.url + "/").status_code == 200


def test_slowloris_partial_head_is_closed_after_the_timeout(start_server):
    server = start_server("httpapp:app", "--timeout-request-header", "0.5")
    with RawConnection((server.host, server.port), timeout=10) as slow:
        slow.send(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        # Another client is served while the slow one dawdles.
        assert httpx.get(server.url + "/").text == "Hello, world!"
        slow.send(b"a")
        assert slow.is_closed_by_server()
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 5
    assert "CALL GET /slow" not in server.output()


def test_slowloris_byte_by_byte_does_not_reset_the_timeout(start_server):
    server = start_server("httpapp:app", "--timeout-request-header", "0.5")
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 200
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
        assert time.monotonic() - started < 5
    assert "CALL" not in server.output()


def test_idle_connection_without_a_request_is_closed(start_server):
    server = start_server("httpapp:app", "--timeout-request-header", "0.5")
    with RawConnection((server.host, server.port), timeout=10) as conn:
        started = time.monotonic()
        assert conn.is_closed_by_server()
        assert time.monotonic() - started < 5


def test_keep_alive_timeout_closes_idle_connections(start_server):
    server = start_server("httpapp:app", "--timeout-keep-alive", "1")
    with RawConnection((server.host, server.port), timeout=10) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200
        started = time.monotonic()
        assert conn.is_closed_by_server()
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5


def test_keep_alive_connection_survives_within_the_timeout(start_server):
    server = start_server("httpapp:app", "--timeout-keep-alive", "3")
    with RawConnection((server.host, server.port), timeout=0.8) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200
        assert not conn.is_closed_by_server()  # still open after 0.8 s
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200


def test_keep_alive_timer_does_not_cut_a_slow_response(start_server):
    server = start_server("httpapp:app", "--timeout-keep-alive", "1")
    with RawConnection((server.host, server.port), timeout=10) as conn:
        conn.send(b"GET /sleep?s=2.2 HTTP/1.1\r\nHost: x\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert response.body == b"slept"


def test_header_timeout_does_not_cut_a_slow_response(start_server):
    server = start_server("httpapp:app", "--timeout-request-header", "0.5")
    response = httpx.get(server.url + "/sleep?s=1.6", timeout=10)
    assert response.text == "slept"


def test_max_header_size_431(start_server):
    server = start_server("httpapp:app", "--max-header-size", "1024")
    ok = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 800 + b"\r\n\r\n"
    assert raw_request(server, ok).status == 200
    big = b"GET /never HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n"
    server_output_before = server.output()
    with RawConnection((server.host, server.port)) as conn:
        conn.send(big)
        response = conn.read_response()
        assert response.status == 431
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert "CALL GET /never" not in server.output()
    assert server.output().count("CALL") == server_output_before.count("CALL")


def test_max_header_size_counts_many_small_headers(start_server):
    server = start_server("httpapp:app", "--max-header-size", "1024")
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: 0123456789\r\n" * 60 + b"\r\n"
    assert_rejected(server, request, 431)


def test_max_header_size_counts_the_request_line(start_server):
    server = start_server("httpapp:app", "--max-header-size", "1024")
    request = b"GET /" + b"a" * 700 + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 700 + b"\r\n\r\n"
    assert_rejected(server, request, 431)


def test_unterminated_huge_header_is_refused_without_buffering(start_server):
    # A header value that never ends must not be buffered until the timeout.
    server = start_server("httpapp:app", "--timeout-request-header", "30")
    with RawConnection((server.host, server.port), timeout=10) as conn:
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
    assert "CALL" not in server.output()


def test_unterminated_huge_header_name_is_refused(start_server):
    server = start_server("httpapp:app", "--max-header-size", "4096")
    with RawConnection((server.host, server.port), timeout=10) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(64):
                conn.send(b"X" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = conn.read_until_closed()
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]


def test_pipelined_small_requests_in_one_large_write_are_not_refused(start_server):
    # Many complete heads in one read must not add up to "too large".
    server = start_server("httpapp:app", "--max-header-size", "1024")
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    count = 40
    with RawConnection((server.host, server.port), timeout=10) as conn:
        conn.send(request * count)
        for _ in range(count):
            assert conn.read_response().status == 200


def test_max_request_line_414(start_server):
    server = start_server("httpapp:app", "--max-request-line", "128")
    ok = b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert raw_request(server, ok).status == 200
    assert server.output().count("CALL") == 1
    request = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    with RawConnection((server.host, server.port)) as conn:
        conn.send(request)
        response = conn.read_response()
        assert response.status == 414
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert server.output().count("CALL") == 1
    assert httpx.get(server.url + "/").status_code == 200


def test_max_request_line_counts_the_query(start_server):
    server = start_server("httpapp:app", "--max-request-line", "128")
    assert_rejected(server, b"GET /?" + b"q" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)


def test_max_headers_431(start_server):
    server = start_server("httpapp:app", "--max-headers", "10")
    ok = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 9 + b"\r\n"
    assert raw_request(server, ok).status == 200
    assert server.output().count("CALL") == 1
    with RawConnection((server.host, server.port)) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10 + b"\r\n")
        response = conn.read_response()
        assert response.status == 431
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert server.output().count("CALL") == 1


def test_limit_concurrency_503(start_server):
    server = start_server("httpapp:app", "--limit-concurrency", "2")
    results: list[int] = []

    def slow() -> None:
        results.append(httpx.get(server.url + "/sleep?s=2", timeout=10).status_code)

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


@pytest.mark.parametrize("flag", ["--timeout-keep-alive", "--timeout-request-header"])
def test_timeouts_do_not_close_a_connection_mid_response(start_server, flag):
    server = start_server("httpapp:app", flag, "0.5")
    with RawConnection((server.host, server.port), timeout=10) as conn:
        conn.send(b"GET /sleep?s=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().body == b"slept"


def test_keep_alive_timeout_is_never_cut_short(start_server):
    # Idle connections opened at different moments all stay open for the full
    # timeout, whatever the phase of the worker's once-a-second tick.
    server = start_server("httpapp:app", "--timeout-keep-alive", "1.5")
    conns = []
    try:
        for _ in range(4):
            conn = RawConnection((server.host, server.port), timeout=10)
            conns.append(conn)
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.read_response()
            conn.answered = time.monotonic()
            time.sleep(0.25)  # spread the requests over a tick (not a sync point)
        for conn in conns:
            assert conn.is_closed_by_server()
            idle = time.monotonic() - conn.answered
            assert idle >= 1.4, f"closed after {idle:.2f}s of a 1.5s keep-alive"
    finally:
        for conn in conns:
            conn.sock.close()


def test_request_header_timeout_is_never_cut_short(start_server):
    server = start_server("httpapp:app", "--timeout-request-header", "1.5")
    conns = []
    try:
        for _ in range(4):
            conn = RawConnection((server.host, server.port), timeout=10)
            conns.append(conn)
            conn.send(b"GET / HTTP/1.1\r\n")
            conn.started = time.monotonic()
            time.sleep(0.25)  # spread over a tick (not a sync point)
        for conn in conns:
            assert conn.is_closed_by_server()
            waited = time.monotonic() - conn.started
            assert waited >= 1.4, f"closed after {waited:.2f}s of a 1.5s header timeout"
    finally:
        for conn in conns:
            conn.sock.close()
