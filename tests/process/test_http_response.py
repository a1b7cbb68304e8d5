"""Responses: framing, bodiless responses, default headers, pathsend and trailers."""

from __future__ import annotations

import email.utils
import hashlib
import os
import time

import httpx
import pytest
from helpers import RawConnection, connect, raw_request, wait_until

H = b"Host: x\r\n"
STREAM_BODY = b"".join(b"chunk%d\n" % i for i in range(5))


def test_whole_body_has_content_length(server):
    response = raw_request(server, b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    assert response.header("content-length") == "13"
    assert response.header("transfer-encoding") is None
    assert response.body == b"Hello, world!"


def test_app_content_length_is_used_for_a_streamed_body(server):
    with connect(server) as conn:
        conn.send(b"GET /stream?length=35 HTTP/1.1\r\n" + H + b"\r\n")
        response = conn.read_response()
        assert response.header("content-length") == "35"
        assert response.header("transfer-encoding") is None
        assert response.body == STREAM_BODY
        conn.send(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_response().body == b"Hello, world!"


def test_streamed_http11_body_is_chunked(server):
    with connect(server) as conn:
        conn.send(b"GET /stream HTTP/1.1\r\n" + H + b"\r\n")
        head = conn._take_until(b"\r\n\r\n")
        assert b"\r\ntransfer-encoding: chunked" in head.lower()
        assert b"content-length" not in head.lower()
        expected = b"".join(b"7\r\nchunk%d\n\r\n" % i for i in range(5)) + b"0\r\n\r\n"
        assert conn._take(len(expected)) == expected
        conn.send(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_response().body == b"Hello, world!"


def test_streamed_http10_body_is_close_delimited(server):
    with connect(server) as conn:
        conn.send(b"GET /stream HTTP/1.0\r\n\r\n")
        data = conn.read_until_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"content-length" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == STREAM_BODY


def test_http10_whole_body_has_content_length(server):
    with connect(server) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        data = conn.read_until_closed()
    assert data.endswith(b"content-length: 13\r\nconnection: close\r\n\r\nHello, world!")


@pytest.mark.parametrize("path", [b"/", b"/stream", b"/stream?length=35"])
def test_head_has_no_body(server, path):
    with connect(server) as conn:
        conn.send(b"HEAD " + path + b" HTTP/1.1\r\n" + H + b"\r\n")
        response = conn.read_response(head_request=True)
        assert response.status == 200
        if path == b"/":
            assert response.header("content-length") == "13"
        # Nothing follows the head: the next response starts right after it.
        conn.send(b"GET /scope HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_response().status == 200
        assert conn.buffer == b""


@pytest.mark.parametrize("code", [204, 304])
@pytest.mark.parametrize("route", ["status", "stream-status"])
def test_no_body_statuses(server, code, route):
    with connect(server) as conn:
        conn.send(f"GET /{route}?code={code}&body=ignored HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = conn._take_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % code)
        assert b"content-length" not in head.lower()
        assert b"transfer-encoding" not in head.lower()
        conn.send(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        response = conn.read_response()
        assert response.status == 200, conn.buffer
        assert response.body == b"Hello, world!"


def test_status_line_reason_phrases(server):
    assert raw_request(server, b"GET /status?code=404 HTTP/1.1\r\n" + H + b"\r\n").reason == (
        "Not Found"
    )
    # An unregistered status still gets a well-formed status line.
    response = raw_request(server, b"GET /status?code=599 HTTP/1.1\r\n" + H + b"\r\n")
    assert response.status == 599
    assert response.head.startswith(b"HTTP/1.1 599 \r\n")


def test_date_and_server_headers(server):
    response = httpx.get(server.url + "/")
    assert response.headers["server"] == "asgid"
    date = email.utils.parsedate_to_datetime(response.headers["date"])
    assert abs(date.timestamp() - time.time()) < 5
    assert response.headers["date"].endswith(" GMT")


def test_date_header_is_refreshed(server):
    with httpx.Client() as client:
        first = client.get(server.url + "/").headers["date"]
        wait_until(lambda: client.get(server.url + "/").headers["date"] != first, timeout=5)


def test_no_server_no_date_headers(start_server):
    server = start_server("httpapp:app", "--no-server-header", "--no-date-header")
    response = raw_request(server, b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    assert response.header("server") is None
    assert response.header("date") is None
    # Error responses too.
    response = raw_request(server, b"GET / HTTP/1.1\r\n\r\n")
    assert response.status == 400
    assert response.header("server") is None
    assert response.header("date") is None


def test_default_headers(start_server):
    server = start_server("httpapp:app", "--header", "X-A: b", "--header", "x-served-by: asgid c")
    response = raw_request(server, b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    assert response.header("x-a") == "b"
    assert response.header("x-served-by") == "asgid c"
    assert response.header("server") == "asgid"
    # The app can override a default header.
    response = raw_request(server, b"GET /headers?x-a=from-app HTTP/1.1\r\n" + H + b"\r\n")
    assert response.header("x-a") == "from-app"
    assert response.header("x-served-by") == "asgid c"
    # Error responses carry them too.
    assert raw_request(server, b"GET / HTTP/1.1\r\n\r\n").header("x-a") == "b"


def test_app_server_header_overrides_the_default(server):
    response = raw_request(server, b"GET /headers?server=my-app HTTP/1.1\r\n" + H + b"\r\n")
    assert response.header("server") == "my-app"
    response = raw_request(server, b"GET /headers?date=yesterday HTTP/1.1\r\n" + H + b"\r\n")
    assert response.header("date") == "yesterday"
    assert response.header("server") == "asgid"


def test_response_headers_keep_order_duplicates_and_case(server):
    with connect(server) as conn:
        conn.send(b"GET /headers?X-One=1&set-cookie=a&set-cookie2=b HTTP/1.1\r\n" + H + b"\r\n")
        head = conn._take_until(b"\r\n\r\n")
    assert b"\r\nX-One: 1\r\nset-cookie: a\r\nset-cookie2: b\r\n" in head


# -- http.response.pathsend ------------------------------------------------------------


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


def test_pathsend_raw_app(start_server, big_file):
    server = start_server("httpapp:app", env={"PATHSEND_FILE": str(big_file)})
    with connect(server, timeout=10) as conn:
        for _ in range(2):  # keep-alive after a file
            conn.send(b"GET /pathsend HTTP/1.1\r\n" + H + b"\r\n")
            response = conn.read_response()
            assert response.status == 200
            assert response.header("x-kind") == "pathsend"
            assert response.header("content-length") == str(big_file.stat().st_size)
            assert hashlib.sha256(response.body).digest() == (
                hashlib.sha256(big_file.read_bytes()).digest()
            )
        conn.send(b"HEAD /pathsend HTTP/1.1\r\n" + H + b"\r\n")
        head = conn.read_response(head_request=True)
        assert head.header("content-length") == str(big_file.stat().st_size)
        conn.send(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_response().body == b"Hello, world!"


def test_pathsend_empty_file(start_server, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    server = start_server("httpapp:app", env={"PATHSEND_FILE": str(empty)})
    response = raw_request(server, b"GET /pathsend HTTP/1.1\r\n" + H + b"\r\n")
    assert response.header("content-length") == "0"
    assert response.body == b""


def test_pathsend_missing_file_closes_the_connection(start_server, tmp_path):
    # The response had started, so the failure can only close the connection.
    server = start_server("httpapp:app", env={"PATHSEND_FILE": str(tmp_path / "missing")})
    with connect(server) as conn:
        conn.send(b"GET /pathsend HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_until_closed() == b""
    wait_until(lambda: "No such file or directory" in server.output(), timeout=5)
    assert httpx.get(server.url + "/").status_code == 200


def test_pathsend_over_http10(start_server, big_file):
    server = start_server("httpapp:app", env={"PATHSEND_FILE": str(big_file)})
    with connect(server, timeout=10) as conn:
        conn.send(b"GET /pathsend HTTP/1.0\r\n\r\n")
        data = conn.read_until_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: %d" % big_file.stat().st_size in head
    assert body == big_file.read_bytes()


def test_starlette_file_response(start_server, big_file):
    server = start_server(
        "starlette_files:app", "--lifespan", "off", env={"PATHSEND_FILE": str(big_file)}
    )
    response = httpx.get(server.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(big_file.stat().st_size)
    assert response.headers["content-type"] == "application/octet-stream"
    assert "etag" in response.headers
    assert response.content == big_file.read_bytes()
    assert "EVENT sent http.response.pathsend" in server.output()
    head = httpx.head(server.url + "/")
    assert head.headers["content-length"] == str(big_file.stat().st_size)
    assert head.content == b""
    ranged = httpx.get(server.url + "/", headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.content == big_file.read_bytes()[10:20]


# -- http.response.trailers ------------------------------------------------------------


def test_trailers_sent_when_the_client_accepts_them(server):
    with connect(server) as conn:
        conn.send(b"GET /trailers HTTP/1.1\r\n" + H + b"TE: trailers\r\n\r\n")
        head = conn._take_until(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert b"\r\ntrailer: x-checksum" in head.lower()
        expected = b"6\r\nhello \r\n5\r\nworld\r\n0\r\nx-checksum: abc123\r\n\r\n"
        assert conn._take(len(expected)) == expected
        conn.send(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_response().body == b"Hello, world!"


def test_trailers_parsed(server):
    with connect(server) as conn:
        conn.send(b"GET /trailers HTTP/1.1\r\n" + H + b"TE: trailers\r\n\r\n")
        response = conn.read_response()
        assert response.body == b"hello world"
        assert response.trailers == [("x-checksum", "abc123")]


def test_no_trailers_without_te(server):
    with connect(server) as conn:
        conn.send(b"GET /trailers HTTP/1.1\r\n" + H + b"\r\n")
        response = conn.read_response()
        assert response.body == b"hello world"
        assert response.trailers == []
        conn.send(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        assert conn.read_response().body == b"Hello, world!"


def produced_mib(server) -> int:
    lines = [line for line in server.output().splitlines() if line.startswith("EVENT produced")]
    return int(lines[-1].split()[2]) if lines else 0


def test_streamed_response_to_a_slow_client_is_not_buffered(server):
    """send() waits while the client does not read: the app cannot run ahead."""
    total_mib = 128
    with RawConnection((server.host, server.port), timeout=10, rcvbuf=65536) as conn:
        conn.send(b"GET /produce?mb=%d HTTP/1.1\r\n" % total_mib + H + b"\r\n")
        wait_until(lambda: "CALL GET /produce" in server.output(), timeout=5)
        time.sleep(1)  # give a runaway producer time to run (not a sync point)
        assert produced_mib(server) <= 32, f"{produced_mib(server)} MiB produced unread"
        response = conn.read_response()
        assert len(response.body) == total_mib * 1024 * 1024
    assert produced_mib(server) == total_mib
