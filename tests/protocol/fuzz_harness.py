"""Fuzzing the worker's HTTP request path through a fake transport (no sockets).

``run_scenario`` builds a ``ServerState`` and an ``HttpProtocol`` on a fresh
asyncio loop, connects it to ``FakeTransport`` and delivers a scenario's byte
chunks and client events (EOF, reset, a timeout tick, a graceful drain) the way
a selector transport would, running the loop until it is idle after each one.
It then closes the connection from the client side, drains the loop, and
returns the properties that failed as ``Problem`` tuples: nothing raised from
the callbacks or into the loop's exception handler, no task left pending, the
bytes written parse as well-formed HTTP/1.1 responses (one final response per
request, plus at most one error response after which the server closes), and a
finite application never leaves a complete request unanswered while the loop
is idle. ``scenarios()`` is the hypothesis strategy: valid requests from a
corpus, pipelined, mutated and cut into chunks. tests/test_fuzz.py runs a short
version in CI; scripts/fuzz runs the same properties for as long as asked.
Bugs found and not fixed yet are listed in ``KNOWN_BUGS``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

from fake import WRITE_MODES, FakeTransport, HandleClosedError, until_idle
from hypothesis import strategies as st

from asgid.config import Config, load_config
from asgid.worker._protocol import HttpProtocol
from asgid.worker._state import ServerState

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_SPINS = 2000  # loop iterations one settle may take before it counts as a busy loop
FAR_FUTURE = 1e6  # seconds each tick adds to the loop's clock: every deadline expires


class Problem(NamedTuple):
    """A failed property: ``category`` is fixed text (the failure's identity), ``detail`` varies."""

    category: str
    detail: str

    def __str__(self) -> str:
        return f"{self.category}: {self.detail}"


class KnownBug(NamedTuple):
    category: str
    detail: str  # a substring of the problem's detail ("" for any)
    description: str


# Failures found by fuzzing and not fixed yet: the CI test ignores them, and
# tests/test_fuzz.py should keep a strict xfail repro of each; remove the entry
# with the fix. The first long runs found seven; their repros are regression
# tests in tests/test_fuzz.py now.
KNOWN_BUGS: tuple[KnownBug, ...] = ()


def is_known(problem: Problem) -> bool:
    return any(
        problem.category == bug.category and bug.detail in problem.detail for bug in KNOWN_BUGS
    )


# -- the corpus: valid requests ------------------------------------------------------


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


_WS_HEAD = (
    b"GET /ws?x=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n"
)
_BIG = 70000  # above the protocol's 64 KiB body high-water mark
_FILE = str(Path(__file__).resolve().parents[2] / "asgid" / "worker" / "_protocol.py")

CORPUS: tuple[bytes, ...] = (
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /a/b%20c?q=1&r=%ff HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: fuzz\r\n"
    b"Accept: */*\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n",
    b"HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n",
    b"PUT /expect HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
    b"PUT /empty HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    b"POST /close HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /old HTTP/1.0\r\n\r\n",
    b"GET /old-keepalive HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
    b"GET http://example.com/abs?x=y HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"GET /h2c HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    b"DELETE /x HTTP/1.1\r\nHost: h\r\nCookie: a=b; c=d\r\n\r\n",
    _WS_HEAD,
    _WS_HEAD + _ws_frame(0x1, b"hello") + _ws_frame(0x2, b"\x00\xff") + _ws_frame(0x8, b"\x03\xe8"),
    b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % _BIG + b"x" * _BIG,
)

# Bytes that tend to matter to an HTTP parser, for insertions.
TOKENS: tuple[bytes, ...] = (
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\x00",
    b" ",
    b"\t",
    b"\r\n ",  # obs-fold
    b"\r\n\t",
    b":",
    b";",
    b",",
    b"\x7f",
    b"\xff",
    b"0",
    b"-1",
    b"99999999999999999999999",
    b"ffffffffffffffffff",
    b"0x10",
    b"\r\nTransfer-Encoding: chunked",
    b"\r\nTransfer-Encoding: gzip, chunked",
    b"\r\nContent-Length: 5",
    b"\r\nContent-Length: 18446744073709551616",
    b"\r\nHost: other",
    b"\r\nExpect: 100-continue",
    b"\r\nConnection: close",
    b"\r\nUpgrade: websocket",
    b" HTTP/1.1",
    b"HTTP/2.0",
    b"HTTP/1.0",
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"0\r\n\r\n",
    b"/" + b"p" * 100,  # past small_limits' request line
    b"\r\nX-Fill: " + b"v" * 300,  # past small_limits' header size
    b"a" * 2000,  # a header line without an end, over several reads
)

# -- scenarios -------------------------------------------------------------------------

EVENTS = ("eof", "reset", "timeout", "drain")


@dataclass(frozen=True, repr=False)
class Scenario:
    """What a client does: ``actions`` are ``("data", bytes)`` or ``(event, b"")``.

    The repr is Python that rebuilds the scenario, with long runs of one byte
    (the big body) written as ``b"x" * 70000``.
    """

    actions: tuple[tuple[str, bytes], ...]
    app: str = "echo"
    config: str = "default"
    writes: str = "fast"  # how the client reads: see FakeTransport
    half_close: bool = True  # the transport can write EOF (TCP; TLS cannot)

    @property
    def stream(self) -> bytes:
        return b"".join(data for kind, data in self.actions if kind == "data")

    def __repr__(self) -> str:
        actions = "".join(f"({kind!r}, {_bytes_repr(data)}), " for kind, data in self.actions)
        return (
            f"Scenario(actions=({actions}), app={self.app!r}, config={self.config!r}, "
            f"writes={self.writes!r}, half_close={self.half_close!r})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))


def _bytes_repr(data: bytes) -> str:
    parts = [
        f"{match[1]!r} * {len(match[0])}" if match[1] else repr(match[0])
        for match in re.finditer(rb"(.)\1{63,}|(?:(?!(.)\2{63}).)+", data, re.DOTALL)
    ]
    return " + ".join(parts) or "b''"


def _mutate(draw: st.DrawFn, data: bytearray) -> None:
    kind = draw(st.sampled_from(("flip", "insert", "delete", "splice", "repeat", "number")))
    pos = draw(st.integers(0, len(data)))
    if kind == "flip" and pos < len(data):
        data[pos] ^= draw(st.integers(1, 255))
    elif kind == "insert":
        token = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=8))
        data[pos:pos] = token
    elif kind == "delete":
        data[pos : pos + draw(st.integers(1, 16))] = b""
    elif kind == "splice":
        other = draw(st.sampled_from(CORPUS))
        start = draw(st.integers(0, len(other)))
        data[pos:pos] = other[start : start + draw(st.integers(1, 64))]
    elif kind == "repeat":
        data[pos:pos] = data[pos : pos + draw(st.integers(1, 32))]
    elif kind == "number":
        match = re.compile(rb"[0-9a-fA-F]+").search(bytes(data), pos)
        if match is not None:
            number = draw(
                st.sampled_from((b"0", b"1", b"-1", b"00000000000000000005", b"FFFFFFFFFFFFFFFF"))
                | st.integers(0, 2**70).map(lambda n: b"%d" % n)
            )
            data[match.start() : match.end()] = number


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A corpus of 1-3 pipelined requests, mutated, cut into chunks, with events between."""
    requests = draw(st.lists(st.sampled_from(CORPUS), min_size=1, max_size=3))
    data = bytearray(b"".join(requests))
    for _ in range(draw(st.integers(0, 4))):
        _mutate(draw, data)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=6))))
    actions: list[tuple[str, bytes]] = []
    for start, end in pairwise([0, 0, *cuts, len(data)]):  # an event may come before any data
        if end > start:
            actions.append(("data", bytes(data[start:end])))
        event = draw(st.integers(0, 15 + len(EVENTS)))  # mostly none; shrinks to none
        if event >= 16:
            actions.append((EVENTS[event - 16], b""))
    return Scenario(
        actions=tuple(actions),
        app=draw(st.sampled_from(tuple(APPS))),
        config=draw(st.sampled_from(tuple(CONFIGS))),
        writes=draw(st.sampled_from(WRITE_MODES)),
        half_close=draw(st.integers(0, 3)) != 3,  # mostly TCP
    )


# -- applications -------------------------------------------------------------------


class FuzzAppError(Exception):
    """Raised on purpose by the applications that fail."""


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None once the client is gone."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _start(send: Send, status: int = 200, headers: list[Any] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})


async def _ws_echo(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept", "subprotocol": "chat"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        reply = {k: message[k] for k in ("text", "bytes") if message.get(k) is not None}
        await send({"type": "websocket.send", **reply})


async def echo_app(scope: Message, receive: Receive, send: Send) -> None:
    """Read the whole body, answer it with a Content-Length."""
    if scope["type"] == "websocket":
        return await _ws_echo(receive, send)
    body = await _read_body(receive)
    if body is None:
        return
    await _start(send, headers=[(b"content-type", b"application/octet-stream")])
    await send({"type": "http.response.body", "body": body})


async def stream_app(scope: Message, receive: Receive, send: Send) -> None:
    """Stream three chunks without reading the body, with trailers when allowed."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"pe"})
        return
    trailers = "http.response.trailers" in scope["extensions"]
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": trailers})
    for i in range(3):
        await send({"type": "http.response.body", "body": b"%d" % i * 9000, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if trailers:
        await send({"type": "http.response.trailers", "headers": [(b"x-done", b"1")]})


async def raise_early_app(scope: Message, receive: Receive, send: Send) -> None:
    """Raise before any response."""
    await asyncio.sleep(0)
    raise FuzzAppError("before the response")


async def raise_midway_app(scope: Message, receive: Receive, send: Send) -> None:
    """Start a response (or accept the WebSocket), send a little, then raise."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "bye"})
    else:
        await _start(send)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    await asyncio.sleep(0)
    raise FuzzAppError("in the middle of the response")


async def return_app(scope: Message, receive: Receive, send: Send) -> None:
    """Return without responding."""


async def partial_app(scope: Message, receive: Receive, send: Send) -> None:
    """Read one message of the body, then answer; a WebSocket is accepted then closed."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    await receive()
    await _start(send, headers=[(b"content-length", b"2")])
    await send({"type": "http.response.body", "body": b"ok"})


async def no_content_app(scope: Message, receive: Receive, send: Send) -> None:
    """204 with a body the server must drop; a WebSocket is refused with a close."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close"})
        return
    await _start(send, 204, [(b"server", b"fuzz"), (b"date", b"today")])
    await send({"type": "http.response.body", "body": b"dropped"})


async def file_app(scope: Message, receive: Receive, send: Send) -> None:
    """Send a file with http.response.pathsend (a WebSocket is echoed)."""
    if scope["type"] == "websocket":
        return await _ws_echo(receive, send)
    await _start(send, headers=[(b"content-type", b"text/x-python")])
    await send({"type": "http.response.pathsend", "path": _FILE})


async def bad_message_app(scope: Message, receive: Receive, send: Send) -> None:
    """Break the ASGI protocol: a body before the start, a send before the accept."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.send", "text": "too early"})
    await send({"type": "http.response.body", "body": b"too early"})


async def longpoll_app(scope: Message, receive: Receive, send: Send) -> None:
    """Wait for the client to go away (never finishes on its own)."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
    while (await receive())["type"] not in ("http.disconnect", "websocket.disconnect"):
        pass


@dataclass(frozen=True)
class AppSpec:
    app: Callable[[Message, Receive, Send], Awaitable[None]]
    finite: bool = True  # answers every complete request without waiting on the client
    logs: tuple[str, ...] = ()  # error-log messages this app is expected to cause
    body: Callable[[bytes], bytes] | None = None  # its 200 response's body, from the request's


APPS: dict[str, AppSpec] = {
    "echo": AppSpec(echo_app, body=lambda request: request),
    "stream": AppSpec(stream_app, body=lambda _: b"0" * 9000 + b"1" * 9000 + b"2" * 9000),
    "raise_early": AppSpec(raise_early_app, logs=("exception in ASGI application",)),
    "raise_midway": AppSpec(raise_midway_app, logs=("exception in ASGI application",)),
    "return": AppSpec(
        return_app,
        logs=(
            "ASGI application returned without starting a response",
            "ASGI application returned without accepting the WebSocket",
        ),
    ),
    "partial": AppSpec(partial_app, body=lambda _: b"ok"),
    "no_content": AppSpec(no_content_app),
    "longpoll": AppSpec(longpoll_app, finite=False),
    "file": AppSpec(file_app, body=lambda _: Path(_FILE).read_bytes()),
    "bad_message": AppSpec(bad_message_app, logs=("invalid ASGI message",)),
}

_OVERRIDES: dict[str, dict[str, Any]] = {
    "default": {},
    "small_limits": {
        "http.max_header_size": 256,
        "http.max_request_line": 64,
        "http.max_headers": 4,
        "http.max_body_size": 8,
    },
    "concurrency_1": {"http.limit_concurrency": 1},
    "proxied_root": {
        "app.root_path": "/root",
        "http.proxy_headers": True,
        "http.forwarded_allow_ips": ["*"],
    },
    "bare": {"http.server_header": False, "http.date_header": False},
}
CONFIGS: dict[str, Config] = {
    name: load_config(None, {"app.target": "fuzz:app", **extra}, environ={})
    for name, extra in _OVERRIDES.items()
}

# -- the fake transport ---------------------------------------------------------------


# -- the protocol, observed -----------------------------------------------------------


@dataclass
class Head:
    """A request head that reached ``on_headers_complete``."""

    method: bytes
    version: str
    keep_alive: bool
    expect: bool
    websocket: bool


class ObservedProtocol(HttpProtocol):
    """``HttpProtocol`` that notes request heads, completed messages and failures.

    ``failures`` holds ``(index, status, reason)`` for each ``fail()``: ``index``
    is the request the error answers, the one whose bytes were being parsed.
    """

    def __init__(self, state: ServerState) -> None:
        super().__init__(state)
        self.heads: list[Head] = []
        self.completed = 0
        self.bodies: dict[int, bytes] = {}  # request index -> the body httptools delivered
        self.complete: set[int] = set()  # the requests whose message completed
        self.failures: list[tuple[int, int, str]] = []
        self.head_failed = False

    def fail(self, status: int, reason: str) -> None:
        parsing_a_head = self.cycle is not None or self.head_failed
        self.failures.append((len(self.heads) - parsing_a_head, status, reason))
        super().fail(status, reason)

    def on_headers_complete(self) -> None:
        parser = self.parser
        names = {name: value.lower() for name, value in self.headers}
        self.heads.append(
            Head(
                method=parser.get_method(),
                version=parser.get_http_version(),
                keep_alive=parser.should_keep_alive(),
                expect=any(
                    n == b"expect" and v.lower() == b"100-continue" for n, v in self.headers
                ),
                websocket=names.get(b"upgrade") == b"websocket",
            )
        )
        self.head_failed = True  # until it returns
        super().on_headers_complete()
        self.head_failed = False

    def on_body(self, body: bytes) -> None:
        index = len(self.heads) - 1
        self.bodies[index] = self.bodies.get(index, b"") + body
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.completed += 1
        self.complete.add(len(self.heads) - 1)
        super().on_message_complete()


def track_tasks(state: ServerState, tasks: list[asyncio.Task[Any]]) -> None:
    """Append each request task ``state`` makes, lazily or eagerly, to ``tasks``."""

    def tracking(make: Callable[[Any], asyncio.Task[None]]) -> Callable[[Any], asyncio.Task[None]]:
        def tracked(coro: Any) -> asyncio.Task[None]:
            task = make(coro)
            tasks.append(task)
            return task

        return tracked

    state.new_task = tracking(state.new_task)
    state.eager_task = tracking(state.eager_task)


# -- the response reader -------------------------------------------------------------

_STATUS_RE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\t \x21-\x7e\x80-\xff]*\Z")
_FIELD_RE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t \x21-\x7e\x80-\xff]*)\Z")
_CHUNK_SIZE_RE = re.compile(rb"[0-9a-fA-F]{1,16}\Z")


@dataclass
class Reading:
    """What ``read_responses`` found in the bytes a client received."""

    finals: list[int] = field(default_factory=list)  # final status codes, in order
    bodies: list[bytes | None] = field(default_factory=list)  # theirs; None if not whole
    switched: bool = False  # a 101 was read; what follows is WebSocket frames
    ends_connection: bool = False  # the last response closes the connection
    truncated: bool = False  # the last response's body was cut short
    delimited: bool = False  # the last response's body ends with the connection
    said_close: bool = False  # the last response carried connection: close
    last_length: int = -1  # the last response's content-length, if any
    continued: int = -1  # the request that the last 100 Continue answered
    problems: list[Problem] = field(default_factory=list)


class _Fail(Exception):
    def __init__(self, category: str, detail: str) -> None:
        super().__init__(category)
        self.problem = Problem(category, detail)


def read_responses(wire: bytes, heads: list[Head]) -> Reading:
    """Parse ``wire`` strictly as the responses to ``heads`` (plus one error at most)."""
    reading = Reading()
    pos = 0
    try:
        while pos < len(wire):
            if reading.ends_connection:
                _after_the_end(wire[pos:], heads, reading)
            pos = _read_one(wire, pos, heads, reading)
    except _Fail as exc:
        reading.problems.append(exc.problem)
    return reading


def _after_the_end(rest: bytes, heads: list[Head], reading: Reading) -> None:
    """Bytes follow the response that ended the connection: say what they look like."""
    index = len(reading.finals) - 1
    head = heads[index] if 0 <= index < len(heads) else None
    if head is not None and head.method == b"HEAD" and len(rest) == reading.last_length:
        raise _Fail("body sent in a response to HEAD", f"{reading.finals[-1]}: {rest[:80]!r}")
    if reading.said_close and _STATUS_RE.match(rest.split(b"\r\n", 1)[0]):
        raise _Fail("response after a connection: close response", repr(rest[:80]))
    raise _Fail("bytes after a response that ends the connection", repr(rest[:80]))


def _read_head(wire: bytes, pos: int) -> tuple[int, dict[bytes, list[bytes]], int]:
    end = wire.find(b"\r\n\r\n", pos)
    if end < 0:
        raise _Fail("unterminated response head", repr(wire[pos:][:120]))
    lines = wire[pos:end].split(b"\r\n")
    match = _STATUS_RE.match(lines[0])
    if match is None:
        raise _Fail("malformed status line", repr(lines[0][:120]))
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        field_match = _FIELD_RE.match(line)
        if field_match is None:
            raise _Fail("malformed header line", repr(line[:120]))
        name, value = field_match.groups()
        headers.setdefault(name.lower(), []).append(value.rstrip(b" \t"))
    return int(match.group(1)), headers, end + 4


def _read_chunked(wire: bytes, pos: int, body: bytearray) -> int | None:
    """The end of a chunked body starting at ``pos``; None when it is cut short."""
    while True:
        end = wire.find(b"\r\n", pos)
        if end < 0:
            return None
        if not _CHUNK_SIZE_RE.match(wire[pos:end]):
            raise _Fail("malformed chunk size line", repr(wire[pos:end][:40]))
        size = int(wire[pos:end], 16)
        pos = end + 2
        if size == 0:
            break
        if len(wire) < pos + size + 2:
            return None
        if wire[pos + size : pos + size + 2] != b"\r\n":
            raise _Fail("chunk data not followed by CRLF", repr(wire[pos + size :][:40]))
        body += wire[pos : pos + size]
        pos += size + 2
    while True:  # the trailer section
        end = wire.find(b"\r\n", pos)
        if end < 0:
            return None
        if end == pos:
            return end + 2
        if not _FIELD_RE.match(wire[pos:end]):
            raise _Fail("malformed trailer line", repr(wire[pos:end][:120]))
        pos = end + 2


def _read_one(wire: bytes, pos: int, heads: list[Head], reading: Reading) -> int:
    status, headers, pos = _read_head(wire, pos)
    index = len(reading.finals)
    head = heads[index] if index < len(heads) else None
    if status < 200:
        if head is None:
            raise _Fail("interim response without a request", str(status))
        if status == 101:
            if not head.websocket:
                raise _Fail("101 for a request that asked for no WebSocket", repr(head))
            reading.switched = reading.ends_connection = True
            return len(wire)
        if status != 100 or not head.expect or head.version != "1.1":
            raise _Fail("unexpected interim response", f"{status} for {head!r}")
        if reading.continued == index:
            raise _Fail("two 100 Continue for one request", repr(head))
        reading.continued = index
        return pos
    reading.finals.append(status)
    tokens = {t.strip().lower() for v in headers.get(b"connection", []) for t in v.split(b",")}
    lengths = headers.get(b"content-length", [])
    codings = headers.get(b"transfer-encoding", [])
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        raise _Fail("bad content-length", repr(lengths))
    if lengths and codings:
        raise _Fail("content-length with transfer-encoding", repr(headers))
    if codings and codings != [b"chunked"]:
        raise _Fail("bad transfer-encoding", repr(codings))
    if codings and head is not None and head.version != "1.1":
        raise _Fail("chunked response to an HTTP/1.0 request", repr(head))
    if status == 204 and (lengths or codings):
        raise _Fail("204 with framing headers", repr(headers))
    reading.said_close = b"close" in tokens
    reading.last_length = int(lengths[0]) if lengths else -1
    if status >= 400 and b"close" not in tokens:  # the apps answer 2xx: an error is the server's
        raise _Fail("error response without connection: close", str(status))
    if head is None and status < 400:
        raise _Fail("more final responses than request heads", str(status))
    end: int | None
    body = bytearray()
    if (head is not None and head.method == b"HEAD") or status in (204, 304):
        end = pos
    elif codings:
        end = _read_chunked(wire, pos, body)
    elif lengths:
        end = pos + int(lengths[0])
        body += wire[pos:end]
        if end > len(wire):
            end = None
    else:
        reading.bodies.append(None)  # whole only if the connection ended well: unknown
        reading.delimited = reading.ends_connection = True
        return len(wire)
    reading.bodies.append(None if end is None else bytes(body))
    persistent = b"close" not in tokens and (
        head is not None
        and head.keep_alive
        and (head.version == "1.1" or b"keep-alive" in tokens)
        and status < 400
    )
    if end is None:
        reading.truncated = reading.ends_connection = True
        return len(wire)
    reading.ends_connection = not persistent
    return end


def count_heads_upper_bound(data: bytes) -> int:
    """How many request heads ``data`` can hold at most: each ends with an empty line."""
    return data.count(b"\n\r\n") + data.count(b"\n\n")


# -- running a scenario -----------------------------------------------------------------


@dataclass
class Outcome:
    problems: list[Problem]
    wire: bytes
    heads: list[Head]
    reading: Reading
    calls: list[str]

    def new_problems(self) -> list[Problem]:
        """The problems that are not known bugs."""
        return [p for p in self.problems if not is_known(p)]


class _LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _Run:
    def __init__(
        self, scenario: Scenario, protocol_class: type[ObservedProtocol], spec: AppSpec
    ) -> None:
        self.scenario = scenario
        self.spec = spec
        self.problems: list[Problem] = []
        self.loop = loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_exception)
        self.state = state = ServerState(CONFIGS[scenario.config], self.spec.app, loop)
        self.tasks: list[asyncio.Task[Any]] = []

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            task = asyncio.Task(coro, loop=loop, **kwargs)
            self.tasks.append(task)
            return task

        track_tasks(state, self.tasks)
        loop.set_task_factory(factory)  # after ServerState: it picks its own task maker
        self.protocol = protocol_class(state)
        self.transport = FakeTransport(
            loop,
            self.protocol,
            writes=scenario.writes,
            half_close=scenario.half_close,
        )
        self.fed = bytearray()
        self.eof = False
        self.checked_wire = 0  # the wire's length when _check_ended last ran
        self.ticks = 0

    def _exception(self, exc: BaseException | None, category: str, detail: str) -> None:
        if isinstance(exc, HandleClosedError):  # the same bug wherever it surfaces
            category = "write after connection_lost"
        self.problems.append(Problem(category, f"{detail}: {exc!r}"))

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self._exception(exc, "loop exception handler called", str(context.get("message")))

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.protocol, name)(*args)
        except Exception as exc:
            self._exception(exc, f"{name} raised", name)
            return None

    async def settle(self) -> None:
        """Run the loop until nothing is ready to run, then check what was written."""
        if not await until_idle(self.loop, MAX_SPINS):
            self.problems.append(Problem("loop never idle", f"{MAX_SPINS} iterations"))
        self._check_ended()

    def _check_ended(self) -> None:
        """A response that ends the connection (an error, say) is followed by the close.

        Checked whenever the loop is idle, before a later timeout could close
        the connection and hide that the server forgot to.
        """
        transport = self.transport
        if transport.server_closed or transport.lost or len(transport.wire) == self.checked_wire:
            return
        self.checked_wire = len(transport.wire)
        reading = read_responses(bytes(transport.wire), self.protocol.heads)
        if any(s >= 400 for s in reading.finals):
            self.problems.append(Problem("error response without a close", repr(reading.finals)))
        elif reading.ends_connection and not (reading.truncated or reading.switched):
            if self.protocol.active is not None:
                return  # still sending (a body delimited by the close, a wait for drain)
            heads = self.protocol.heads
            self.problems.append(
                Problem("connection kept open after its last response", repr(heads))
            )

    def can_read(self) -> bool:
        t = self.transport
        return not (t.closing or t.lost_scheduled or t.reading_paused or self.eof)

    async def drive(self) -> None:
        transport = self.transport
        self._call("connection_made", transport)
        await self.settle()
        gap = False  # a chunk could not be delivered: the rest of the stream is not either
        for kind, data in self.scenario.actions:
            if kind in ("data", "eof") and (gap or not self.can_read()):
                gap = True
            elif kind == "data":
                self.fed += data
                self._call("data_received", data)
            elif kind == "eof":
                self.eof = True
                if not self._call("eof_received"):
                    transport.close()
            elif kind == "reset":
                transport.lose(ConnectionResetError(104, "Connection reset by peer"))
            elif kind == "timeout":
                self.tick()
            elif kind == "drain":
                self.state.draining = True
                for conn in list(self.state.connections):
                    conn.shutdown(restart=True)
            await self.settle()
        self._check_stalled("reading paused" if transport.reading_paused else "reading")
        for _ in range(5):  # the client waits; the server's timeouts expire, one by one
            self.tick()
            await self.settle()
        stuck = transport.buffered and (transport.writing_paused or transport.closing)
        if stuck and not transport.lost_scheduled:
            self.problems.append(Problem("a client that reads nothing is never dropped", ""))
        transport.lose(None)  # the client gives up
        await self.settle()

    def tick(self) -> None:
        """What the worker's once-a-second tick does, long after every deadline."""
        self.ticks += 1
        now = self.loop.time() + FAR_FUTURE * self.ticks
        for conn in list(self.state.connections):
            conn.check_deadline(now)
        for session in list(self.state.websockets):
            session.check(now)

    def _check_stalled(self, why: str) -> None:
        """A finite app left a complete request unanswered while the loop is idle."""
        transport = self.transport
        if not self.spec.finite or transport.is_closing() or transport.eof_written:
            return
        if transport.writes == "stuck":  # the client's fault
            return
        if self.protocol.ws is not None:
            return
        reading = read_responses(bytes(self.transport.wire), self.protocol.heads)
        if reading.problems or reading.switched:
            return
        owed = self.protocol.completed - len(reading.finals)
        if owed > 0:
            self.problems.append(Problem("stalled with the loop idle", f"{why}: {owed} owed"))

    def check(self) -> None:
        transport, state = self.transport, self.state
        problems = self.problems
        for task in self.tasks:
            if not task.done():
                problems.append(Problem("task pending after the connection closed", repr(task)))
            elif not task.cancelled() and task.exception() is not None:
                self._exception(task.exception(), "task died with an exception", repr(task))
        if not transport.lost:
            problems.append(Problem("connection_lost never delivered", repr(transport.calls)))
        leftovers = {
            "connections": len(state.connections),
            "cycles": len(state.cycles),
            "websockets": len(state.websockets),
            "in_progress": state.in_progress,
        }
        if any(leftovers.values()):
            problems.append(Problem("server state not cleaned up", repr(leftovers)))
        if transport.late:
            detail = f"closed by {transport.closer}(), then {bytes(transport.late[:80])!r}"
            problems.append(Problem("write after close()", detail))
        heads = self.protocol.heads
        reading = read_responses(bytes(transport.wire), heads)
        problems.extend(reading.problems)
        bound = count_heads_upper_bound(bytes(self.fed)) + 1
        if len(reading.finals) > bound:
            problems.append(
                Problem("more final responses than the input allows", f"{reading.finals} > {bound}")
            )
        self._check_bodies(reading)
        failures = self.protocol.failures
        if failures and reading.finals and reading.finals[-1] == failures[0][1]:
            index, status, reason = failures[0]
            sent = reason.encode("utf-8", "replace") in transport.wire
            position = len(reading.finals) - 1
            if sent and index != position:
                detail = f"{status} for request #{index} sent as response #{position}"
                problems.append(Problem("error response answers the wrong request", detail))

    def _check_bodies(self, reading: Reading) -> None:
        """A whole 200 response to a whole request has the body the app sent."""
        expected_body, protocol = self.spec.body, self.protocol
        if expected_body is None:
            return
        for index, (status, body) in enumerate(zip(reading.finals, reading.bodies, strict=False)):
            head = protocol.heads[index] if index < len(protocol.heads) else None
            if status != 200 or body is None or head is None or head.method == b"HEAD":
                continue
            if index not in protocol.complete:
                continue
            expected = expected_body(protocol.bodies.get(index, b""))
            if body != expected:
                detail = f"#{index}: {body[:40]!r}... ({len(body)} bytes), not {expected[:40]!r}..."
                self.problems.append(Problem("response body is not what the app sent", detail))

    def run(self) -> None:
        logger = logging.getLogger("asgid")
        recorder = _LogRecorder()
        saved = logger.propagate, logger.level
        logger.addHandler(recorder)
        logger.propagate = False
        logger.setLevel(logging.ERROR)
        try:
            self.loop.run_until_complete(self.drive())
            self.check()
            self._cancel_leftovers()
        finally:
            logger.removeHandler(recorder)
            logger.propagate, logger.level = saved
            self.loop.close()
        for record in recorder.records:
            self._check_log(record)

    def _cancel_leftovers(self) -> None:
        pending = [t for t in self.tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending, timeout=1.0))

    def _check_log(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if message.startswith("error while parsing a request"):
            self._exception(exc, "internal error while parsing a request", message)
        elif exc is not None and not isinstance(exc, FuzzAppError):
            self._exception(exc, "unexpected exception logged", message)
        elif not any(message.startswith(allowed) for allowed in self.spec.logs):
            self.problems.append(Problem("unexpected error logged", message))


def run_scenario(
    scenario: Scenario,
    *,
    protocol_class: type[ObservedProtocol] = ObservedProtocol,
    app: AppSpec | None = None,
) -> Outcome:
    """Play ``scenario`` against a fresh protocol and return what failed.

    ``protocol_class`` and ``app`` replace the protocol and ``scenario.app``
    (the tests use them to check that a broken server is caught).
    """
    run = _Run(scenario, protocol_class, app or APPS[scenario.app])
    run.run()
    return Outcome(
        problems=run.problems,
        wire=bytes(run.transport.wire),
        heads=run.protocol.heads,
        reading=read_responses(bytes(run.transport.wire), run.protocol.heads),
        calls=run.transport.calls,
    )


def describe(scenario: Scenario, outcome: Outcome) -> Iterator[str]:
    """Lines that explain a failure: the problems, the input, what came back."""
    for problem in outcome.problems:
        yield f"  {problem}"
    yield (
        f"  app={scenario.app} config={scenario.config} writes={scenario.writes}"
        f" half_close={scenario.half_close}"
    )
    for kind, data in scenario.actions:
        yield f"  {kind} {data[:300]!r}" + (" ..." if len(data) > 300 else "")
    yield f"  transport calls: {outcome.calls}"
    yield f"  wire: {outcome.wire[:600]!r}"
