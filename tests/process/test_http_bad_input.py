"""Malformed requests get an exact 4xx/505, a closed connection, and never reach the app."""

from __future__ import annotations

import httpx
import pytest
from helpers import RawConnection, running_server, wait_until

H = b"Host: example.com\r\n"

BAD_REQUESTS = {
    # request line
    "garbage": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
    "no-version": (b"GET /\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "missing-target": (b"GET HTTP/1.1\r\n" + H + b"\r\n", 400),
    "trailing-junk": (b"GET / HTTP/1.1 junk\r\n" + H + b"\r\n", 400),
    "bad-protocol": (b"GET / HTTQ/1.1\r\n" + H + b"\r\n", 400),
    "bare-lf": (b"GET / HTTP/1.1\n" + H + b"\n", 400),
    "relative-target": (b"GET index.html HTTP/1.1\r\n" + H + b"\r\n", 400),
    "asterisk-get": (b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    "asterisk-post": (b"POST * HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", 400),
    # method
    "invalid-method-char": (b"G@T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    # RFC 9110 9.1: a well-formed method the server does not know is 501
    # (methods are case-sensitive: `get` is not GET).
    "lower-case-method": (b"get / HTTP/1.1\r\n" + H + b"\r\n", 501),
    "unknown-method": (b"FROBNICATE / HTTP/1.1\r\n" + H + b"\r\n", 501),
    # version
    "http-2.0": (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    "http-1.2": (b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    "http-3.0": (b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
    # header names and values
    "space-in-header-name": (b"GET / HTTP/1.1\r\n" + H + b"X Y: a\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\n" + H + b"X-A : a\r\n\r\n", 400),
    "paren-in-header-name": (b"GET / HTTP/1.1\r\n" + H + b"X(Y): a\r\n\r\n", 400),
    "empty-header-name": (b"GET / HTTP/1.1\r\n" + H + b": a\r\n\r\n", 400),
    "no-colon": (b"GET / HTTP/1.1\r\n" + H + b"X-A\r\n\r\n", 400),
    "nul-in-value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    "cr-in-value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400),
    "lf-in-value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\nb\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", 400),
    # Content-Length
    "cl-letters": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400),
    "cl-negative": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    "cl-plus": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    "cl-empty": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length:\r\n\r\n", 400),
    "cl-list": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    "cl-hex": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    "cl-huge": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
        400,
    ),
    "cl-conflicting": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "cl-duplicate": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    "cl-and-te": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "te-and-cl": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    # Transfer-Encoding
    "te-gzip": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nhello", 400),
    "te-chunked-gzip": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\nhello",
        400,
    ),
    "te-gzip-chunked": (  # RFC 9112 6.1: a coding it does not implement is 501
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "te-identity": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 400),
    "te-twice": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    # chunked body
    "chunk-size-letters": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-negative": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-overflow": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk-missing-crlf": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        400,
    ),
    # Host
    "host-missing": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "host-duplicated": (b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    "host-two-values": (b"GET / HTTP/1.1\r\nHost: a.com, b.com\r\n\r\n", 400),
    "host-space": (b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n", 400),
    "host-slash": (b"GET / HTTP/1.1\r\nHost: example.com/path\r\n\r\n", 400),
    "host-userinfo": (b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n", 400),
    "host-bad-port": (b"GET / HTTP/1.1\r\nHost: example.com:80a\r\n\r\n", 400),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole module: each case checks it still serves afterwards."""
    log_dir = tmp_path_factory.mktemp("bad-input")
    with running_server(log_dir, "httpapp:app", "--log-level", "debug") as server:
        yield server


def calls(server) -> list[str]:
    return [line for line in server.output().splitlines() if line.startswith("CALL ")]


def check_still_serving(server, marker: str) -> None:
    response = httpx.get(f"{server.url}/{marker}")
    assert response.status_code == 200
    wait_until(lambda: f"CALL GET /{marker}" in server.output(), timeout=5)


@pytest.mark.parametrize(("request_bytes", "status"), BAD_REQUESTS.values(), ids=BAD_REQUESTS)
def test_bad_request(server, request_bytes, status, request):
    before = len(calls(server))
    with RawConnection((server.host, server.port)) as conn:
        conn.send(request_bytes)
        response = conn.read_response()
        assert response.status == status, response.body
        assert response.header("connection") == "close"
        assert response.header("content-length") == str(len(response.body))
        assert conn.is_closed_by_server()
        assert conn.buffer == b""
    marker = "after-" + request.node.callspec.id
    check_still_serving(server, marker)
    # The only call since the bad request is the check's own.
    assert calls(server)[before:] == [f"CALL GET /{marker}"]
    # A malformed request is the client's fault: logged at debug level, no traceback.
    assert "Traceback" not in server.output()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\n" + H + b"\r\nGET /x HTTP/1.1\r\n" + H + b"X Y: z\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + H + b"\r\nGET /x HTTP/2.0\r\n" + H + b"\r\n",
    ],
    ids=["bad-header", "bad-version"],
)
def test_bad_pipelined_request_after_a_good_one(server, request_bytes):
    before = len(calls(server))
    with RawConnection((server.host, server.port)) as conn:
        conn.send(request_bytes)
        first = conn.read_response()
        assert first.status == 200
        assert first.body == b"Hello, world!"
        second = conn.read_response()
        assert second.status in (400, 505)
        assert second.header("connection") == "close"
        assert conn.is_closed_by_server()
    check_still_serving(server, "after-pipelined")
    assert calls(server)[before:] == ["CALL GET /", "CALL GET /after-pipelined"]


def test_bad_request_after_a_head_request_keeps_its_body(server):
    # The parser still holds HEAD from the request before; the 400 answers a
    # request whose method was never read, so it has a body.
    with RawConnection((server.host, server.port)) as conn:
        conn.send(b"HEAD / HTTP/1.1\r\n" + H + b"\r\n\x01BAD / HTTP/1.1\r\n\r\n")
        assert conn.read_response(head_request=True).status == 200
        error = conn.read_response()
        assert error.status == 400
        assert error.body.startswith(b"Bad Request")
        assert conn.is_closed_by_server()


def test_error_response_to_head_has_no_body(server):
    with RawConnection((server.host, server.port)) as conn:
        conn.send(b"HEAD / HTTP/1.1\r\n\r\n")  # no Host: 400
        error = conn.read_response(head_request=True)
        assert error.status == 400
        assert int(error.header("content-length") or 0) > 0
        assert conn.read_until_closed() == b""


def test_bad_chunk_after_a_body_the_app_is_reading(server):
    # The app already runs when the body turns out malformed: it sees a disconnect.
    before = len(calls(server))
    with RawConnection((server.host, server.port)) as conn:
        conn.send(
            b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        wait_until(lambda: len(calls(server)) > before, timeout=5)
        conn.send(b"zz\r\n")
        response = conn.read_response()
        assert response.status == 400
        assert conn.is_closed_by_server()
    check_still_serving(server, "after-bad-chunk")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
        b"GET http://example.com/abs?x=1 HTTP/1.1\r\n" + H + b"\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\n" + H + b"\r\n",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0005\r\n\r\nhello",
        b"GET / HTTP/1.1\r\n" + H + b"X-A: \x80\xff latin\t1\r\n\r\n",
    ],
    ids=[
        "options-asterisk",
        "absolute-form",
        "http10-without-host",
        "empty-host",
        "ipv6-host",
        "leading-empty-line",
        "chunk-extension",
        "chunked-mixed-case",
        "cl-leading-zeros",
        "obs-text-value",
    ],
)
def test_unusual_but_valid_requests_are_served(server, request_bytes):
    with RawConnection((server.host, server.port)) as conn:
        conn.send(request_bytes)
        response = conn.read_response()
        assert response.status == 200, response.body
        assert response.body == b"Hello, world!"
