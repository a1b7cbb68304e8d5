"""The access log and log levels, as seen in the server's output."""

from __future__ import annotations

import re

import httpx
from helpers import RawConnection, wait_until

H = b"Host: x\r\n"
ACCESS = re.compile(
    r'\[worker 0\] INFO (?P<client>\S+) - "(?P<request>[^"]*)" (?P<status>\d+) (?P<bytes>\d+) '
    r"(?P<ms>[\d.]+)ms$"
)


def access_lines(server) -> list[re.Match[str]]:
    return [m for line in server.output().splitlines() if (m := ACCESS.search(line))]


def test_access_log_line(start_server):
    server = start_server("httpapp:app")
    with RawConnection((server.host, server.port)) as conn:
        conn.send(b"GET /headers?a=1 HTTP/1.1\r\n" + H + b"\r\n")
        conn.read_response()
        conn.send(b"POST /echo HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
        conn.read_response()
        port = conn.sock.getsockname()[1]
    wait_until(lambda: len(access_lines(server)) == 2, timeout=5)
    first, second = access_lines(server)
    assert first["client"] == f"127.0.0.1:{port}"
    assert first["request"] == "GET /headers?a=1 HTTP/1.1"
    assert first["status"] == "200"
    assert first["bytes"] == "2"
    assert second["request"] == "POST /echo HTTP/1.0"
    assert second["bytes"] == "5"


def test_access_log_streamed_and_error_responses(start_server):
    server = start_server("httpapp:app")
    httpx.get(server.url + "/stream")
    httpx.get(server.url + "/error")
    httpx.head(server.url + "/")
    wait_until(lambda: len(access_lines(server)) == 3, timeout=5)
    stream, error, head = access_lines(server)
    assert (stream["request"], stream["status"], stream["bytes"]) == (
        "GET /stream HTTP/1.1",
        "200",
        "35",
    )
    assert (error["request"], error["status"]) == ("GET /error HTTP/1.1", "500")
    assert (head["request"], head["status"]) == ("HEAD / HTTP/1.1", "200")


def test_access_log_cannot_be_forged_through_the_path(start_server):
    server = start_server("httpapp:app")
    forged = b"/x%0D%0A2026-01-01 00:00:00,000 [1] [worker 0] INFO 6.6.6.6:1 - %22GET /admin"
    forged = forged.replace(b" ", b"%20")
    with RawConnection((server.host, server.port)) as conn:
        conn.send(b"GET " + forged + b" HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_response().status == 200
    wait_until(lambda: len(access_lines(server)) == 1, timeout=5)
    assert "6.6.6.6" not in "".join(m["client"] for m in access_lines(server))
    assert not any(line.startswith("2026-01-01") for line in server.output().splitlines())


def test_no_access_log(start_server):
    server = start_server("httpapp:app", "--no-access-log")
    assert httpx.get(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/error").status_code == 500
    wait_until(lambda: "boom before start" in server.output(), timeout=5)
    assert access_lines(server) == []
    assert '"GET / HTTP/1.1"' not in server.output()


def test_log_level_trace(start_server):
    server = start_server("httpapp:app", "--log-level", "trace", "--timeout-request-header", "0.5")
    assert httpx.get(server.url + "/").status_code == 200
    with RawConnection((server.host, server.port), timeout=10) as conn:
        assert conn.is_closed_by_server()  # an idle connection, closed at TRACE level
    wait_until(lambda: " TRACE " in server.output(), timeout=5)
    assert "closing idle connection" in server.output()
    assert access_lines(server)


def test_log_level_debug_hides_trace(start_server):
    server = start_server("httpapp:app", "--log-level", "debug", "--timeout-request-header", "0.5")
    with RawConnection((server.host, server.port), timeout=10) as conn:
        assert conn.is_closed_by_server()
    assert httpx.get(server.url + "/").status_code == 200
    wait_until(lambda: access_lines(server), timeout=5)
    assert " TRACE " not in server.output()


def test_log_level_debug_shows_bad_requests_but_info_does_not(start_server):
    quiet = start_server("httpapp:app")
    chatty = start_server("httpapp:app", "--log-level", "debug")
    for server in (quiet, chatty):
        with RawConnection((server.host, server.port)) as conn:
            conn.send(b"GET / HTTP/1.1\r\n\r\n")
            assert conn.read_response().status == 400
    wait_until(lambda: "without a Host header" in chatty.output(), timeout=5)
    assert "without a Host header" not in quiet.output()


def test_log_level_warning_hides_the_access_log(start_server):
    server = start_server("httpapp:app", "--log-level", "warning")
    assert httpx.get(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/error").status_code == 500
    wait_until(lambda: "boom before start" in server.output(), timeout=5)
    assert access_lines(server) == []
