"""One HTTP/2 stream: an ASGI ``http`` call, its request body and its response.

``H2Stream`` is what the application's ``receive`` and ``send`` talk to. It
turns ASGI messages into calls on the connection's ``h2`` state machine
(headers, DATA frames as the peer's windows allow, trailers) and hands the
request body to the app, opening the receive window only as the app consumes
it. The connection (``_h2.H2Protocol``) owns the socket, the events and the
limits; a stream never writes to the transport itself: it asks the
connection to flush.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from h2.errors import ErrorCodes

from .._exceptions import ClientDisconnected
from ._access import format_client
from ._cycle import AppCall
from ._h1 import InvalidMessage, check_field, checked_body, content_length
from ._types import Message

if TYPE_CHECKING:
    from ._h2 import H2Protocol

logger = logging.getLogger("asgid.error")

FILE_CHUNK = 262144  # bytes read per DATA write by http.response.pathsend
_NO_BODY_STATUSES = frozenset({204, 304})
# Connection-specific fields (RFC 9113 8.2.2) an application may send for
# HTTP/1.1; in HTTP/2 they make the response malformed, so they are dropped.
CONNECTION_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
_STATUS = {code: str(code).encode() for code in range(100, 600)}


class H2Stream(AppCall):
    """One request on an HTTP/2 connection and its ASGI application call."""

    conn: H2Protocol

    __slots__ = (
        "body_bytes",
        "body_deadline",
        "body_done",
        "body_received",
        "complete",
        "conn",
        "disconnected",
        "expect_continue",
        "expected",
        "finished",
        "head",
        "is_head",
        "scope",
        "start_time",
        "started",
        "status",
        "stream_id",
        "task",
        "trailers",
        "trailers_declared",
        "unacked",
        "window_deadline",
        "window_waiter",
        "written",
    )

    def __init__(self, conn: H2Protocol, stream_id: int, more_body: bool) -> None:
        self.conn = conn
        self.state = conn.state
        self.stream_id = stream_id
        self.scope: dict[str, Any] = {}
        self.body: list[bytes] = []
        self.unacked = 0  # flow-controlled bytes received, not yet handed to the app
        self.body_received = 0
        self.more_body = more_body
        self.request_sent = False
        self.disconnected = False
        self.finished = False  # response complete or abandoned: the body is no longer wanted
        self.waiter: asyncio.Future[None] | None = None
        self.window_waiter: asyncio.Future[None] | None = None
        self.window_deadline = 0.0
        self.body_deadline = (
            conn.loop.time() + conn.state.timeout_request_body if more_body else 0.0
        )
        self.task: asyncio.Task[None] | None = None
        self.start_time = 0.0
        # The response.
        self.started = False
        self.complete = False
        self.body_done = False
        self.status = 0
        self.head: list[tuple[bytes, bytes]] | None = None
        self.is_head = False
        self.expect_continue = False  # a 100 (Continue) is owed when the app first reads
        self.expected = -1
        self.written = 0
        self.body_bytes = 0
        self.trailers_declared = False
        self.trailers: list[tuple[bytes, bytes]] = []

    def start(self) -> None:
        state = self.conn.state
        if state.timed:
            self.start_time = time.perf_counter()
        self.task = state.eager_task(self.run())  # called once its connection's read is handled

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_writer(self) -> None:
        waiter = self.window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def disconnect(self) -> None:
        self.disconnected = True
        self.finished = True
        self.release_body()
        self.wake()
        self.wake_writer()

    def release_body(self) -> None:
        """Give the window of a body the app will not read back to the connection."""
        if self.unacked and not self.conn.closed:
            self.conn.conn.acknowledge_received_data(self.unacked, self.stream_id)
            self.conn.flush_soon()
        self.unacked = 0
        self.body.clear()

    def receive_data(self, data: bytes, size: int) -> None:
        state = self.conn.state
        self.body_received += len(data)
        limit = state.max_body_size
        if limit and self.body_received > limit:
            self.unacked += size
            if self.started:
                self.conn._reset(self.stream_id, ErrorCodes.CANCEL)
                self.disconnect()
            else:
                self.refuse(413, too_large(limit))
            return
        if data:
            self.body.append(data)
        self.unacked += size
        self.body_deadline = self.conn.loop.time() + state.timeout_request_body
        self.wake()

    def body_timed_out(self) -> None:
        timeout = self.conn.state.timeout_request_body
        logger.info(
            "resetting a stream from %s: no request body for %gs",
            format_client(self.conn.client),
            timeout,
        )
        self.body_deadline = 0.0
        if self.started:
            self.conn._reset(self.stream_id, ErrorCodes.CANCEL)
            self.disconnect()
        else:
            self.refuse(408, f"no request body for {timeout:g}s")

    # -- the application call ------------------------------------------------------

    # -- how an application call ended, on this stream (see _cycle.AppCall) --

    def _complete(self) -> bool:
        return self.complete

    def _gone(self) -> bool:
        return self.disconnected

    def _started(self) -> bool:
        return self.started

    def _answer_500(self) -> None:
        self.refuse(500, "Internal Server Error")

    def _abort(self) -> None:
        pass  # stream_done() resets a stream left unfinished

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            self.conn.stream_done(self)  # whatever the outcome

    def refuse(self, status: int, reason: str) -> None:
        """Answer with a plain-text error and end the stream (the app never sees it,
        or has not started a response)."""
        conn = self.conn
        if self.disconnected or conn.closed:
            return
        logger.debug("%s from %s: %s", status, format_client(conn.client), reason)
        self.started = True
        self.status = status
        body = f"{status} {reason}\n".encode("utf-8", "replace")
        h2 = conn.conn
        head = [
            (b":status", _STATUS[status]),
            *conn.state.defaults.fields(None),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        # The body goes when the window allows it at once; else the status alone.
        sends = not self.is_head and len(body) <= h2.local_flow_control_window(self.stream_id)
        if not sends and not self.is_head:
            head.pop()
        h2.send_headers(self.stream_id, head, end_stream=not sends)
        if sends:
            h2.send_data(self.stream_id, body, end_stream=True)
        self.complete = True
        self.finished = True
        if self.more_body:
            conn._reset(self.stream_id, ErrorCodes.NO_ERROR)
        if self.task is None:  # no application call: the stream ends here
            conn.stream_done(self)
        else:
            if conn.state.timed:
                self.record()
            self.disconnect()  # the app's next receive() says so, its next send() raises
        conn.flush_soon()

    # -- receive -------------------------------------------------------------------

    async def receive(self) -> Message:
        if self.expect_continue:
            self.expect_continue = False
            if not self.started and not self.disconnected:
                self.conn.conn.send_headers(self.stream_id, [(b":status", b"100")])
                self.conn.flush_soon()
        return await self._request_message()

    def _body_taken(self, more_body: bool) -> None:
        if self.unacked:  # the app has the bytes: the client may send as many again
            conn = self.conn
            conn.conn.acknowledge_received_data(self.unacked, self.stream_id)
            self.unacked = 0
            conn.flush_soon()
            if more_body:
                self.body_deadline = conn.loop.time() + conn.state.timeout_request_body

    def _over(self) -> bool:
        return self.complete

    # -- send ----------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client disconnected")
        kind = message["type"]
        if kind == "http.response.body":
            self.conn.state.pending_heads.pop(self, None)  # a waiting head leaves with this body
            await self._body(message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.start":
            self._start(message)
            self.conn.state.head_pending(self)
        elif kind == "http.response.trailers":
            self._trailers(message.get("headers", ()), message.get("more_trailers", False))
        elif kind == "http.response.pathsend":
            await self._send_file(message["path"])
        else:
            raise InvalidMessage(f"unexpected ASGI message {kind!r} for an http scope")

    def _start(self, message: Message) -> None:
        if self.started:
            raise InvalidMessage("http.response.start sent twice")
        status = message["status"]
        if type(status) is not int or not 200 <= status <= 599:
            raise InvalidMessage(f"http.response.start: invalid status {status!r}")
        defaults = self.conn.state.defaults
        head = [(b":status", _STATUS[status])]
        overridden: set[bytes] | None = None
        try:
            for name, value in message.get("headers", ()):
                lower = name.lower()
                check_field(lower, value, "response header")
                if lower in CONNECTION_FIELDS:
                    continue
                if lower == b"content-length":
                    self.expected = content_length(value, self.expected)
                elif lower in defaults.names:
                    if overridden is None:
                        overridden = set()
                    overridden.add(lower)
                head.append((lower, bytes(value)))
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidMessage(f"http.response.start: invalid headers ({exc})") from None
        head += defaults.fields(overridden)
        self.trailers_declared = bool(message.get("trailers", False))
        self.status = status
        self.started = True
        self.head = head

    @property
    def sends_body(self) -> bool:
        return not self.is_head and self.status not in _NO_BODY_STATUSES

    def _send_head(self, end_stream: bool) -> None:
        head = self.head
        assert head is not None
        self.head = None
        self.conn.conn.send_headers(self.stream_id, head, end_stream=end_stream)
        self.conn.flush_soon()

    def flush_head(self) -> None:
        if self.head is not None and not self.disconnected:
            self._send_head(False)

    async def _body(self, body: object, more_body: object) -> None:
        """One ``http.response.body`` message's fields, as the app sent them."""
        data = checked_body(body, started=self.started, done=self.body_done)
        size = len(data)
        self.body_bytes += size
        end = not more_body and not self.trailers_declared
        sends_body = self.sends_body
        if self.head is not None:
            if (
                end
                and self.expected < 0
                and self.status not in _NO_BODY_STATUSES
                and (size or not self.is_head)
            ):
                self.head.append((b"content-length", b"%d" % size))
            self._send_head(end and not (sends_body and size))
        elif end and not (sends_body and size):
            self.conn.conn.end_stream(self.stream_id)
            self.conn.flush_soon()
        if sends_body:
            self.written += size
            if 0 <= self.expected < self.written:
                raise InvalidMessage(
                    f"response body longer than its content-length {self.expected}"
                )
            if not more_body and 0 <= self.expected != self.written:
                raise InvalidMessage(
                    f"response body of {self.written} bytes does not match "
                    f"content-length {self.expected}"
                )
            if size:
                await self._write(data, end)
        if not more_body:
            self.body_done = True
            if end:
                self._response_done()

    def _trailers(self, headers: Any, more: object) -> None:
        if not self.trailers_declared or not self.body_done or self.complete:
            raise InvalidMessage("http.response.trailers sent out of order")
        for name, value in headers:
            lower = name.lower()
            check_field(lower, value, "trailer")
            if lower not in CONNECTION_FIELDS:
                self.trailers.append((lower, bytes(value)))
        if more:
            return
        if self.trailers:
            self.conn.conn.send_headers(self.stream_id, self.trailers, end_stream=True)
        else:
            self.conn.conn.end_stream(self.stream_id)
        self.conn.flush_soon()
        self._response_done()

    def _response_done(self) -> None:
        self.complete = True
        self.finished = True
        self.window_deadline = 0.0
        if self.conn.state.timed:
            self.record()
        self.wake()

    async def _write(self, data: bytes | bytearray | memoryview, end: bool) -> None:
        """Send ``data`` in DATA frames as the peer's windows allow."""
        conn = self.conn
        h2 = conn.conn
        stream_id = self.stream_id
        view = memoryview(data)
        while view:
            if self.disconnected:
                raise ClientDisconnected("the client disconnected")
            window = h2.local_flow_control_window(stream_id)
            if window <= 0:
                await self._wait_window()
                continue
            size = min(window, h2.max_outbound_frame_size, len(view))
            chunk = view[:size]
            view = view[size:]
            h2.send_data(stream_id, chunk.tobytes(), end_stream=end and not view)
            self.window_deadline = 0.0
            conn.flush_soon(size)
            if conn.write_paused:
                await conn.drain()
        if self.disconnected:
            raise ClientDisconnected("the client disconnected")

    async def _wait_window(self) -> None:
        conn = self.conn
        if not self.window_deadline:
            self.window_deadline = conn.loop.time() + conn.state.timeout_write
        self.window_waiter = conn.loop.create_future()
        try:
            await self.window_waiter
        finally:
            self.window_waiter = None

    async def _send_file(self, path: str) -> None:
        if self.head is None or self.trailers_declared:
            raise InvalidMessage("http.response.pathsend sent out of order")
        try:
            with open(path, "rb") as f:  # noqa: ASYNC230 - a local file's open() does not block
                size = os.fstat(f.fileno()).st_size
                if self.expected < 0:
                    if self.status not in _NO_BODY_STATUSES:
                        self.head.append((b"content-length", b"%d" % size))
                elif self.expected != size:
                    raise InvalidMessage(
                        f"content-length {self.expected} does not match the file's {size} bytes"
                    )
                self.body_done = True
                self.body_bytes = size
                sends = self.sends_body and size > 0
                self._send_head(not sends)
                if sends:
                    await self._write_file(f, size)
        except OSError as exc:
            if self.disconnected:
                raise ClientDisconnected("the client disconnected") from exc
            raise
        self._response_done()

    async def _write_file(self, f: BinaryIO, size: int) -> None:
        while size > 0:
            chunk = f.read(min(FILE_CHUNK, size))
            if not chunk:
                raise OSError(f"file {f.name!r} shrank while it was being sent")
            size -= len(chunk)
            await self._write(chunk, size == 0)

    def record(self) -> None:
        """The response is over: count it, and log it."""
        self.conn.state.record(self.scope, self.status, self.body_bytes, self.start_time)


def too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes (max_body_size)"
