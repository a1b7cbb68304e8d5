"""Application errors, invalid ASGI messages and clients that go away."""

from __future__ import annotations

import socket

import httpx
import pytest
from helpers import connect, raw_request, wait_until

H = b"Host: x\r\n"


@pytest.fixture
def own_server(start_server):
    """A server of the test's own, for tests whose requests outlive them."""
    return start_server("httpapp:app")


def error_lines(server) -> list[str]:
    return [line for line in server.output().splitlines() if " ERROR " in line]


def test_exception_before_start_is_500(server):
    with connect(server) as conn:
        conn.send(b"GET /error HTTP/1.1\r\n" + H + b"\r\n")
        response = conn.read_response()
        assert response.status == 500
        assert response.header("connection") == "close"
        assert b"boom" not in response.body  # no details leak to the client
        assert conn.is_closed_by_server()
    wait_until(lambda: "RuntimeError: boom before start" in server.output(), timeout=5)
    assert "exception in ASGI application" in server.output()
    assert httpx.get(server.url + "/").status_code == 200


def test_exception_after_start_closes_the_connection(server):
    with connect(server) as conn:
        conn.send(b"GET /error-after-start HTTP/1.1\r\n" + H + b"\r\n")
        data = conn.read_until_closed()
    # Whatever was sent, the chunked body is never completed.
    assert data.startswith(b"HTTP/1.1 200 ")
    assert not data.endswith(b"0\r\n\r\n")
    wait_until(lambda: "RuntimeError: boom after start" in server.output(), timeout=5)
    assert httpx.get(server.url + "/").status_code == 200


def test_exception_after_head_closes_the_connection(server):
    with connect(server) as conn:
        conn.send(b"GET /error-after-head HTTP/1.1\r\n" + H + b"\r\n")
        data = conn.read_until_closed()
    assert b"0\r\n\r\n" not in data
    wait_until(lambda: "RuntimeError: boom after head" in server.output(), timeout=5)


def test_returning_without_response_is_500(server):
    response = raw_request(server, b"GET /no-response HTTP/1.1\r\n" + H + b"\r\n")
    assert response.status == 500
    assert response.header("connection") == "close"
    wait_until(lambda: "returned without starting a response" in server.output(), timeout=5)


def test_returning_with_an_incomplete_response_closes(server):
    with connect(server) as conn:
        conn.send(b"GET /incomplete HTTP/1.1\r\n" + H + b"\r\n")
        data = conn.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert not data.endswith(b"0\r\n\r\n")
    wait_until(lambda: "without completing the response" in server.output(), timeout=5)


INVALID_BEFORE_START = {
    "body-first": "before http.response.start",
    "str-status": "invalid status '200'",
    "bad-status": "invalid status 99",
    "str-header": "invalid headers",
    "header-crlf": "CR, LF or NUL",
    "unknown-type": "http.response.bogus",
    "bad-length": "invalid headers",
}


@pytest.mark.parametrize(("kind", "reason"), INVALID_BEFORE_START.items(), ids=INVALID_BEFORE_START)
def test_invalid_message_before_the_response_is_500(server, kind, reason):
    with connect(server) as conn:
        conn.send(f"GET /invalid?kind={kind} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        response = conn.read_response()
        assert response.status == 500
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    wait_until(lambda: "invalid ASGI message" in server.output(), timeout=5)
    (line,) = [line for line in error_lines(server) if "invalid ASGI message" in line]
    assert reason in line
    assert "Traceback" not in server.output()
    assert httpx.get(server.url + "/").status_code == 200


INVALID_AFTER_START = {
    "double-start": "sent twice",
    "str-body": "must be bytes",
    "body-after-end": "after the body completed",
    "too-long": "content-length",
}


@pytest.mark.parametrize(("kind", "reason"), INVALID_AFTER_START.items(), ids=INVALID_AFTER_START)
def test_invalid_message_after_start(server, kind, reason):
    with connect(server) as conn:
        conn.send(f"GET /invalid?kind={kind} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = conn.read_until_closed()
    if data:
        # Either a 500 (nothing was written yet) or a response cut short.
        assert data.startswith((b"HTTP/1.1 500 ", b"HTTP/1.1 200 "))
    if kind == "body-after-end":
        # The complete first response arrived and stands.
        assert data.startswith(b"HTTP/1.1 200 ")
        assert data.endswith(b"\r\n\r\ndone")
    wait_until(lambda: "invalid ASGI message" in server.output(), timeout=5)
    (line,) = [line for line in error_lines(server) if "invalid ASGI message" in line]
    assert reason in line
    assert "Traceback" not in server.output()


def test_str_body_is_not_sent_over_http10(server):
    with connect(server) as conn:
        conn.send(b"GET /invalid?kind=str-body HTTP/1.0\r\n\r\n")
        data = conn.read_until_closed()
    assert b"text" not in data
    wait_until(lambda: "must be bytes" in server.output(), timeout=5)
    assert "Traceback" not in server.output()


# -- disconnects ---------------------------------------------------------------------


def test_disconnect_while_waiting_is_delivered(server):
    with connect(server) as conn:
        conn.send(b"POST /wait-disconnect HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc")
        wait_until(lambda: "EVENT body complete" in server.output(), timeout=5)
    wait_until(lambda: "EVENT got http.disconnect" in server.output(), timeout=5)


def test_disconnect_mid_body_is_delivered(server):
    with connect(server) as conn:
        conn.send(b"POST /wait-disconnect HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\nabc")
        wait_until(lambda: "EVENT waiting for disconnect" in server.output(), timeout=5)
    wait_until(lambda: "EVENT got http.disconnect" in server.output(), timeout=5)
    assert "EVENT body complete" not in server.output()


def test_disconnect_after_the_response_is_complete(server):
    response = httpx.post(server.url + "/after-response", content=b"x")
    assert response.text == "done"
    wait_until(lambda: "EVENT after response: http.disconnect" in server.output(), timeout=5)


def test_client_gone_mid_request_leaves_no_traceback(own_server):
    server = own_server
    # A client that goes away while the app reads the body, or while it streams
    # the response, is normal life: no traceback, no error line.
    with connect(server) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1000\r\n\r\npartial")
        wait_until(lambda: "CALL POST /echo" in server.output(), timeout=5)
    with connect(server) as conn:
        conn.send(b"GET /send-after-disconnect HTTP/1.1\r\n" + H + b"\r\n")
        conn._take_until(b"first")
    with connect(server) as conn:
        conn.send(b"POST /slow-read?hold=0.2 HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\n12")
        wait_until(lambda: "EVENT slow-read started" in server.output(), timeout=5)
    with connect(server) as conn:
        conn.send(b"GET /sleep?s=0.3 HTTP/1.1\r\n" + H + b"\r\n")
        wait_until(lambda: "CALL GET /sleep" in server.output(), timeout=5)
    for call in ("POST /echo", "GET /send-after-disconnect", "POST /slow-read", "GET /sleep"):
        wait_until(lambda call=call: f"END {call} (" in server.output(), timeout=10)
    assert httpx.get(server.url + "/").status_code == 200
    output = server.output()
    assert "Traceback" not in output
    assert error_lines(server) == []
    assert "slept" not in output


def test_client_reset_mid_response_leaves_no_traceback(own_server):
    server = own_server
    import socket
    import struct

    with connect(server) as conn:
        conn.send(b"GET /send-after-disconnect HTTP/1.1\r\n" + H + b"\r\n")
        conn._take_until(b"first")
        # RST instead of FIN.
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_until(lambda: "END GET /send-after-disconnect (" in server.output(), timeout=10)
    assert httpx.get(server.url + "/").status_code == 200
    assert "Traceback" not in server.output()
    assert error_lines(server) == []


def test_connection_closed_after_a_half_closed_client_is_abandoned(own_server):
    server = own_server
    # The client shuts down its sending side mid-body: the app sees the disconnect,
    # and the server must then close its side too instead of keeping the socket.
    import signal

    with connect(server) as conn:
        conn.send(b"POST /wait-disconnect HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\nabc")
        wait_until(lambda: "EVENT waiting for disconnect" in server.output(), timeout=5)
        conn.sock.shutdown(socket.SHUT_WR)
        wait_until(lambda: "EVENT got http.disconnect" in server.output(), timeout=5)
        assert conn.is_closed_by_server()
    # Nothing is left to drain: the worker stops at once.
    server.signal(signal.SIGTERM)
    assert server.wait(5) == 0


def test_connection_closed_after_the_app_raises_for_a_gone_client(server):
    with connect(server) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\nabc")
        wait_until(lambda: "CALL POST /echo" in server.output(), timeout=5)
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.is_closed_by_server()
