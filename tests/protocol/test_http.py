"""HTTP/1.1 in-process: the worker's protocol on a fake transport, exact bytes, no sockets.

Each test drives one ``Connection`` (fake.py) with the bytes a client sends
and reads what the server wrote back, deterministically and in milliseconds.
The process tests cover the same ground through real sockets; these pin the
protocol's own decisions: framing, keep-alive, error answers, the ASGI
messages the app sees.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from fake import Connection

from asgid.worker._protocol import HttpProtocol
from asgid.worker._types import Receive, Scope, Send

GET = b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    body = f"{scope['method']} {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the request body, after reading all of it."""
    chunks = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        chunks.append(message["body"])
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"".join(chunks)})


@pytest.fixture
def connect() -> Iterator[Any]:
    connections: list[Connection] = []

    def make(app: Any) -> Connection:
        connections.append(Connection(app))
        return connections[-1]

    yield make
    for connection in connections:
        connection.close()


def responses(wire: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """(status line, headers, body) of each content-length-framed response."""
    result = []
    while wire:
        head, _, wire = wire.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines)
        size = int(headers.get(b"content-length", b"0"))
        result.append((status, headers, wire[:size]))
        wire = wire[size:]
    return result


def test_a_request_is_answered_and_the_connection_kept(connect: Any) -> None:
    conn = connect(hello)
    conn.send(GET)
    ((status, headers, body),) = responses(conn.wire)
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"GET /path"
    assert headers[b"content-length"] == b"9"
    assert not conn.closed


def test_pipelined_requests_are_answered_in_order(connect: Any) -> None:
    conn = connect(hello)
    conn.send(GET.replace(b"/path", b"/one") + GET.replace(b"/path", b"/two"))
    assert [body for _, _, body in responses(conn.wire)] == [b"GET /one", b"GET /two"]


def test_head_gets_the_length_but_no_body(connect: Any) -> None:
    conn = connect(hello)
    conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, rest = conn.wire.partition(b"\r\n\r\n")
    assert b"content-length: 6" in head.lower()  # what GET would send: "HEAD /"
    assert rest == b""


def test_a_malformed_request_line_gets_400_and_a_close(connect: Any) -> None:
    conn = connect(hello)
    conn.send(b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n")
    assert conn.wire.startswith(b"HTTP/1.1 400 ")
    assert conn.closed


def test_a_chunked_body_reaches_the_app_whole(connect: Any) -> None:
    conn = connect(echo)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.send(b"5\r\nhello\r\n")
    assert conn.wire == b""  # the app is still reading
    conn.send(b"6\r\n world\r\n0\r\n\r\n")
    ((status, _, body),) = responses(conn.wire)
    assert (status, body) == (b"HTTP/1.1 200 OK", b"hello world")


def test_100_continue_is_sent_only_when_the_app_reads(connect: Any) -> None:
    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"too big"})

    expect = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    reader = connect(echo)
    reader.send(expect)
    assert reader.wire == b"HTTP/1.1 100 Continue\r\n\r\n"
    reader.send(b"hello")
    assert responses(reader.wire.partition(b"\r\n\r\n")[2])[0][2] == b"hello"

    refuser = connect(refuse)
    refuser.send(expect)
    assert refuser.wire.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in refuser.wire


def test_an_app_error_before_the_response_is_a_500_and_a_close(connect: Any) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("the app is broken")

    conn = connect(broken)
    conn.send(GET)
    assert conn.wire.startswith(b"HTTP/1.1 500 ")
    assert conn.closed


def test_an_app_error_after_the_head_ends_the_connection(connect: Any) -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("failed halfway")

    conn = connect(half)
    conn.send(GET)
    assert conn.wire.count(b"HTTP/1.1 ") == 1  # no second response to the same request
    assert conn.closed


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ],
)
def test_the_connection_closes_when_the_client_asks(connect: Any, request_head: bytes) -> None:
    conn = connect(hello)
    conn.send(request_head)
    assert b" 200 OK\r\n" in conn.wire
    assert conn.closed


def test_the_scope_describes_the_request(connect: Any) -> None:
    seen: list[Scope] = []

    async def record(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await hello(scope, receive, send)

    conn = connect(record)
    conn.send(b"PUT /a%20b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nX-Thing: one\r\n\r\n")
    (scope,) = seen
    assert scope["type"] == "http"
    assert (scope["method"], scope["http_version"], scope["scheme"]) == ("PUT", "1.1", "http")
    assert (scope["path"], scope["raw_path"]) == ("/a b", b"/a%20b")
    assert scope["query_string"] == b"x=1&y=2"
    assert (b"x-thing", b"one") in scope["headers"]
    assert scope["client"] == ("10.1.2.3", 50000)
    assert scope["server"] == ("127.0.0.1", 8000)


@pytest.mark.parametrize(
    ("request_head", "version"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "1.1"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", "1.1"),
        (b"GET / HTTP/1.0\r\n\r\n", "1.0"),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "1.0"),
        (b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n", "1.0"),
    ],
)
def test_the_scope_has_the_http_version_the_request_line_says(
    connect: Any, request_head: bytes, version: str
) -> None:
    # The version is read from httptools only when keep-alive does not settle it.
    seen: list[Scope] = []

    async def record(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await hello(scope, receive, send)

    conn = connect(record)
    conn.send(request_head)
    assert [scope["http_version"] for scope in seen] == [version]
    assert conn.wire.startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_client_that_leaves_mid_body_is_a_disconnect(connect: Any) -> None:
    received: list[dict[str, Any]] = []

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            received.append(message)
            if message["type"] == "http.disconnect":
                return

    conn = connect(reader)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
    conn.transport.lose(None)
    conn.settle()
    assert received[-1] == {"type": "http.disconnect"}
    assert b"".join(m.get("body", b"") for m in received) == b"half"


@pytest.mark.parametrize(
    "request_head",
    [GET, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"],
    ids=["kept-then-dropped", "closed-by-the-server"],
)
def test_a_closed_connection_leaves_no_garbage_for_the_cycle_collector(
    request_head: bytes,
) -> None:
    # The parser holds the protocol's callbacks; were that cycle left in place,
    # every connection (protocol, parser, transport and a dozen more objects)
    # would wait for the cycle collector: 10% of the CPU of short connections.
    def protocols() -> int:
        return sum(isinstance(o, HttpProtocol) for o in gc.get_objects())

    gc.collect()
    before = protocols()
    gc.disable()
    try:
        conn = Connection(hello)
        conn.send(request_head)
        assert b" 200 OK\r\n" in conn.wire
        conn.close()
        del conn
        assert protocols() == before
    finally:
        gc.enable()
