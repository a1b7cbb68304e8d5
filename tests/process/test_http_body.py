"""Request bodies: Content-Length and chunked, streamed, flow control, 100-continue."""

from __future__ import annotations

import json
import os
import socket
import time

import httpx
import pytest
from helpers import connect, wait_until

H = b"Host: x\r\n"


def test_content_length_body(server):
    body = os.urandom(100_000)
    response = httpx.post(server.url + "/echo", content=body)
    assert response.status_code == 200
    assert response.content == body


def test_chunked_body_across_writes(server):
    with connect(server) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")
        conn.send(b"5\r\nhel")
        conn.send(b"lo\r\n")
        conn.send(b"6;name=value\r\n world\r\n")
        conn.send(b"0\r\nX-Trailer: ignored\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert response.body == b"hello world"


def test_chunked_body_from_httpx(server):
    def generate():
        for i in range(10):
            yield b"part%d;" % i

    response = httpx.post(server.url + "/echo", content=generate())
    assert response.content == b"".join(b"part%d;" % i for i in range(10))


def test_empty_body_is_one_message(server):
    for request in (
        b"GET /echo HTTP/1.1\r\n" + H + b"\r\n",
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ):
        with connect(server) as conn:
            conn.send(request)
            response = conn.read_response()
            assert response.body == b""
            assert response.header("x-messages") == "1"


def test_body_is_streamed_to_the_app(server):
    # The app gets the body in parts as it arrives, not as one buffered blob.
    with connect(server) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\n")
        conn.send(b"01234")
        wait_until(lambda: "CALL POST /echo" in server.output(), timeout=5)
        time.sleep(0.1)  # let the first part reach the app by itself (not a sync point)
        conn.send(b"56789")
        response = conn.read_response()
        assert response.body == b"0123456789"
        assert int(response.header("x-messages")) >= 2


def test_unread_body_is_discarded_before_the_next_request(server):
    body = b"x" * 1_000_000
    with connect(server, timeout=10) as conn:
        conn.send(b"POST /no-read HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(body))
        conn.send(body)
        response = conn.read_response()
        assert response.body == b"not reading"
        conn.send(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n\r\nnext")
        assert conn.read_response().body == b"next"


def test_unread_chunked_body_is_discarded(server):
    with connect(server, timeout=10) as conn:
        conn.send(
            b"POST /no-read HTTP/1.1\r\n"
            + H
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"10000\r\n"
            + b"y" * 0x10000
            + b"\r\n0\r\n\r\n"
            + b"GET /echo HTTP/1.1\r\n"
            + H
            + b"\r\n"
        )
        assert conn.read_response().body == b"not reading"
        assert conn.read_response().status == 200


def test_large_upload_to_a_slow_reader_is_not_buffered(server):
    """The server stops reading while the app has not consumed the body."""
    total = 256 * 1024 * 1024
    block = b"z" * (1024 * 1024)
    with connect(server, timeout=0.5) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        conn.send(
            b"POST /slow-read?hold=3 HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % total
        )
        wait_until(lambda: "EVENT slow-read started" in server.output(), timeout=5)
        sent = 0
        deadline = time.monotonic() + 2
        while sent < total and time.monotonic() < deadline:
            try:
                sent += conn.sock.send(block[: min(len(block), total - sent)])
            except TimeoutError:
                break
        # Only kernel socket buffers (tens of MiB at most) took the rest.
        assert "EVENT slow-read reading" not in server.output()
        assert sent < 96 * 1024 * 1024, f"the server took {sent} bytes without the app reading"
        # Once the app reads, the whole body arrives intact.
        conn.sock.settimeout(10)
        wait_until(lambda: "EVENT slow-read reading" in server.output(), timeout=10)
        while sent < total:
            sent += conn.sock.send(block[: min(len(block), total - sent)])
        response = conn.read_response()
        assert response.body == str(total).encode()


def test_pipelined_requests_are_not_read_ahead_without_bound(start_server):
    server = start_server("httpapp:app")  # its own: the slow request outlives the test
    # While the first request runs, the server does not parse the ones queued behind it.
    request = b"GET /scope HTTP/1.1\r\n" + H + b"\r\n"
    with connect(server, timeout=0.5) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        conn.send(b"GET /sleep?s=3 HTTP/1.1\r\n" + H + b"\r\n")
        wait_until(lambda: "CALL GET /sleep" in server.output(), timeout=5)
        sent = 0
        batch = request * 1000
        deadline = time.monotonic() + 2
        while sent < 200 * 1024 * 1024 and time.monotonic() < deadline:
            try:
                sent += conn.sock.send(batch)
            except TimeoutError:
                break
        assert sent < 96 * 1024 * 1024
        assert server.output().count("CALL GET /scope") <= 1


# -- Expect: 100-continue ----------------------------------------------------------


def test_100_continue_sent_when_the_app_reads(server):
    with connect(server) as conn:
        conn.send(
            b"POST /expect?wait=0.5 HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        wait_until(lambda: "EVENT expect started" in server.output(), timeout=5)
        conn.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            conn.sock.recv(100)  # nothing before the app asks for the body
        conn.sock.settimeout(5)
        wait_until(lambda: "EVENT expect receive" in server.output(), timeout=5)
        interim = conn.read_response()
        assert interim.status == 100
        assert interim.head == b"HTTP/1.1 100 Continue"
        conn.send(b"hello")
        final = conn.read_response()
        assert final.status == 200
        assert final.body == b"got 5"
        # The connection is still usable.
        conn.send(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_response().body == b"Hello, world!"


def test_100_continue_not_sent_when_the_app_does_not_read(server):
    with connect(server) as conn:
        conn.send(
            b"POST /no-read?status=413 HTTP/1.1\r\n" + H + b"Content-Length: 1000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        response = conn.read_response()
        assert response.status == 413
        assert response.body == b"not reading"
        # The body was never asked for, so the connection cannot be reused.
        assert response.header("connection") == "close"
        assert conn.read_until_closed() == b""


def test_100_continue_with_a_body_sent_anyway(server):
    # Clients may send the body without waiting for the 100 (RFC 9110 10.1.1).
    with connect(server) as conn:
        conn.send(
            b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\nhello"
        )
        first = conn.read_response()
        if first.status == 100:
            first = conn.read_response()
        assert first.status == 200
        assert first.body == b"hello"


def test_no_100_continue_for_http10(server):
    with connect(server) as conn:
        conn.send(
            b"POST /expect HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
        )
        data = conn.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"100 Continue" not in data


def test_100_continue_with_httpx(server):
    response = httpx.post(
        server.url + "/expect", content=b"abc", headers={"Expect": "100-continue"}
    )
    assert response.text == "got 3"


FORBIDDEN_IN_TRAILERS = [
    b"host: evil.example",
    b"authorization: Bearer stolen",
    b"cookie: session=other",
    b"content-type: text/evil",
    b"x-forwarded-for: 10.0.0.1",
    b"x-injected: 1",
]


@pytest.mark.parametrize("trailer", [b"content-length: 0", b"transfer-encoding: chunked"])
def test_framing_fields_in_trailers_are_a_bad_request(server, trailer):
    with connect(server) as conn:
        conn.send(
            b"POST /headers-after-body HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n\r\n"
        )
        response = conn.read_response()
    assert response.status == 400  # llhttp refuses them (a smuggling attempt)


@pytest.mark.parametrize("trailer", FORBIDDEN_IN_TRAILERS)
def test_request_trailers_never_join_the_headers(server, trailer):
    with connect(server) as conn:
        conn.send(
            b"POST /headers-after-body HTTP/1.1\r\nHost: good.example\r\n"
            b"Authorization: Bearer mine\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n\r\n"
        )
        response = conn.read_response()
    assert response.status == 200
    headers = [tuple(pair) for pair in json.loads(response.body)]
    assert headers == [
        ("host", "good.example"),
        ("authorization", "Bearer mine"),
        ("transfer-encoding", "chunked"),
    ]


def test_a_flood_of_trailer_fields_is_refused(server):
    trailers = b"".join(b"x-t%d: 1\r\n" % i for i in range(500))
    with connect(server) as conn:
        conn.send(
            b"POST /headers-after-body HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n"
        )
        response = conn.read_response()
    assert response.status in (200, 431)  # the answer may already be on its way
    assert len(response.body) < 1000
