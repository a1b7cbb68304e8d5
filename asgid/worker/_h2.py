"""HTTP/2 connections: h2 owns the frames, this module the I/O edge and the ASGI cycles.

``H2Protocol`` feeds bytes to an ``h2`` connection (the sans-IO state machine:
framing, HPACK, stream states, flow-control windows) and acts on the events it
returns; each stream is one ``H2Stream``, an ASGI ``http`` call with
``http_version`` "2". No frame is parsed here. What this module adds is the
policy h2 leaves to its user: a receive window opened only as the app consumes
a body, sends that wait on the peer's windows, the per-request limits of
HTTP/1.1, deadlines the worker's tick checks, budgets against the known frame
floods (each ends in GOAWAY ENHANCE_YOUR_CALM), and a GOAWAY that lets a
draining worker finish the streams it has accepted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    UnknownFrameReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hpack import Encoder
from hyperframe.frame import GoAwayFrame

from .._exceptions import ClientDisconnected
from ._access import format_client
from ._h1 import BadRequest, InvalidMessage, check_field, split_target
from ._hpack import StatelessEncoder
from ._transport import reset
from ._types import Message

if TYPE_CHECKING:
    from ._state import ServerState

logger = logging.getLogger("asgid.error")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STREAM_WINDOW = 262144  # request body bytes one stream may have buffered, unread by the app
CONNECTION_WINDOW = 1048576  # the same for all streams of a connection together
SMALL_WINDOW_UPDATE = 1024  # a WINDOW_UPDATE below this counts against the control budget
FILE_CHUNK = 262144
FLUSH_SIZE = 65536
LINGER = 2.0  # seconds a closing connection reads and drops what still arrives
DRAIN_GRACE = 1.0  # seconds a GOAWAY leaves for frames already in flight before the close
# A draining connection's GOAWAY waits for a moment without streams in
# progress, at most this long: h2-based clients (httpx, for one) fail the
# streams still in flight when a GOAWAY arrives, although RFC 9113 6.8 has
# them completed.
DRAIN_BUSY = 5.0
_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}
_NO_BODY_STATUSES = frozenset({204, 304})
# Connection-specific fields (RFC 9113 8.2.2) an application may send for
# HTTP/1.1; in HTTP/2 they make the response malformed, so they are dropped.
_CONNECTION_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
_NONE: frozenset[int] = frozenset()
_NAME_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")  # a lower-case token (RFC 9113 8.2.1)
_BAD_VALUE = re.compile(rb"[\0\r\n]|^[ \t]|[ \t]$")  # RFC 9113 8.2.1
_NAMES_OK: set[bytes] = set()
_METHOD_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a token (RFC 9110 9.1)
_STATUS = {code: str(code).encode() for code in range(100, 600)}
_HOST_OK: set[bytes] = set()


class Malformed(Exception):
    """A request RFC 9113 calls malformed: the stream is reset with PROTOCOL_ERROR."""


class H2Protocol(asyncio.Protocol):
    """One HTTP/2 connection (TLS with ALPN ``h2``, or cleartext with prior knowledge)."""

    def __init__(
        self,
        state: ServerState,
        *,
        tls: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
    ) -> None:
        self.state = state
        self.loop = state.loop
        self.scheme = "https" if tls else "http"
        self.client = client
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.streams: dict[int, H2Stream] = {}
        self.deadline = 0.0  # no stream in progress: the connection is closed at this time
        self.write_deadline = 0.0
        self.write_backlog = 0
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.closed = False  # no more frames are read: a GOAWAY ended the connection
        self.goaway_id = -1  # the last stream id a graceful GOAWAY promised to serve
        self.draining = 0.0  # when set: the time by which the GOAWAY goes, idle or not
        self.control_frames = 0  # in the current tick: see _count()
        self.resets = 0
        self.doomed: set[int] | frozenset[int] = _NONE
        self.flush_scheduled = False
        self.unflushed = 0  # bytes of DATA queued in h2 since the last flush
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            # asgid checks the fields both ways itself (_scope, _start), at a
            # fraction of the cost of h2's chain of generators.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = self.conn = H2Connection(config)
        conn.encoder = cast(Encoder, StatelessEncoder())
        max_streams = state.http2_max_streams
        settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: state.max_header_size,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            },
        )
        conn.local_settings = settings
        conn.decoder.max_header_list_size = state.max_header_size  # the HPACK bomb's limit
        conn.initiate_connection()
        # h2 treats a stream above the advertised limit as a connection error;
        # RFC 9113 5.1.2 allows refusing just that stream, which a client that
        # has not yet seen the SETTINGS deserves. h2's own limit goes higher,
        # unannounced, and asgid refuses the excess streams itself.
        settings[SettingCodes.MAX_CONCURRENT_STREAMS] = max_streams * 2 + 10
        settings.acknowledge()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)

    # -- asyncio callbacks ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        state = self.state
        state.connections.add(self)
        state.http2_connections += 1
        self.deadline = self.loop.time() + state.timeout_request_header
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.state.http2_connections -= 1
        self.closed = True
        for stream in list(self.streams.values()):
            stream.disconnect()
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        return False  # HTTP/2 has no half-closed connections: close ours too

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:  # h2 has queued a GOAWAY with the right code
            logger.info(
                "closing the HTTP/2 connection from %s: %s (GOAWAY %s)",
                format_client(self.client),
                exc,
                _code_name(getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)),
            )
            self._close()
            return
        # h2 hands over the events of a whole read at once: a stream opened and
        # reset in the same read (rapid reset) is never started.
        self.doomed = (
            {e.stream_id for e in events if type(e) is StreamReset} if len(events) > 1 else _NONE
        )
        handlers = _HANDLERS
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(self, event)
                if self.ended():  # a GOAWAY ended the connection
                    return
        if self.state.draining and not self.draining and self.streams:
            self.shutdown()  # accepted as the listener closed: serve what came, then GOAWAY
        self.flush()

    def ended(self) -> bool:
        return self.closed

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = 0.0
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        if self.drain_waiter is None:
            self.drain_waiter = self.loop.create_future()
        await self.drain_waiter

    def flush(self) -> None:
        self.unflushed = 0
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def flush_soon(self, size: int = 0) -> None:
        """Write what h2 has queued once this loop iteration's streams have sent theirs
        (one write, one TLS record, for many small responses); at once past 64 KiB."""
        self.unflushed += size
        if self.unflushed > FLUSH_SIZE:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self.flush_scheduled = False
        if not self.closed:
            self.flush()

    # -- h2 events ---------------------------------------------------------------

    def _on_request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        state = self.state
        if 0 <= self.goaway_id < stream_id:
            # Sent after our GOAWAY: ignored (RFC 9113 6.8); the client sends it
            # again on a new connection once it reads the GOAWAY.
            self._count("streams after GOAWAY")
            return
        if stream_id in self.doomed:
            return  # its StreamReset comes next, and counts
        if len(self.streams) >= state.http2_max_streams:
            # Beyond the limit (a client that has not seen the SETTINGS yet): the
            # client may retry it.
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            self._count("refused streams")
            return
        self.deadline = 0.0
        stream = H2Stream(self, stream_id, event.stream_ended is None)
        self.streams[stream_id] = stream
        try:
            stream.scope = self._scope(event.headers, stream)
        except Malformed as exc:  # a stream error (RFC 9113 8.1.1)
            logger.debug("malformed request from %s: %s", format_client(self.client), exc)
            del self.streams[stream_id]
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
            self._count("malformed requests")
            return
        except BadRequest as exc:
            stream.refuse(exc.status, exc.reason)
            return
        if state.limit_concurrency and state.in_progress >= state.limit_concurrency:
            stream.refuse(503, "too many requests in progress (limit_concurrency)")
            return
        stream.start()

    def _scope(self, fields: Iterable[tuple[bytes, bytes]], stream: H2Stream) -> dict[str, Any]:
        """The ASGI scope of a request; raises ``Malformed`` for what RFC 9113 8.2-8.3 forbid."""
        state = self.state
        method = target = authority = pseudo_scheme = b""
        headers: list[tuple[bytes, bytes]] = []
        cookies: list[bytes] = []
        host = False
        for name, value in fields:
            if _BAD_VALUE.search(value):
                raise Malformed(f"field {name!r} has a forbidden character or whitespace")
            if name[:1] == b":":
                if headers or cookies:
                    raise Malformed("pseudo-header after a regular field")
                if name == b":method" and not method:
                    method = value
                elif name == b":path" and not target:
                    target = value
                elif name == b":authority" and not authority:
                    authority = value
                elif name == b":scheme" and not pseudo_scheme:
                    pseudo_scheme = value  # the scope's is the connection's (or a proxy's)
                else:
                    raise Malformed(f"pseudo-header {name!r} unknown or repeated")
                continue
            if name not in _NAMES_OK:
                if not _NAME_RE.fullmatch(name) or name in _CONNECTION_FIELDS:
                    if name != b"te":
                        raise Malformed(f"field name {name!r} not allowed")
                elif len(_NAMES_OK) < 512:
                    _NAMES_OK.add(name)
            if name == b"te" and value != b"trailers":
                raise Malformed("te other than trailers")
            if name == b"cookie":
                cookies.append(value)  # RFC 9113 8.2.3: one field for HTTP/1.1 semantics
            else:
                if name == b"host":
                    host = True
                headers.append((name, value))
        if not method or not pseudo_scheme or (not target and method != b"CONNECT"):
            raise Malformed("a pseudo-header is missing")
        if not _METHOD_RE.fullmatch(method):
            raise Malformed(f"method {method[:20]!r} is not a token")
        stream.is_head = method == b"HEAD"
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        if authority and not host:
            if authority not in _HOST_OK:
                from ._h1 import _HOST_RE

                if not _HOST_RE.match(authority):
                    raise BadRequest("invalid :authority")
                if len(_HOST_OK) < 256:
                    _HOST_OK.add(authority)
            headers.insert(0, (b"host", authority))
        if len(headers) > state.max_headers:
            raise BadRequest("too many header fields", status=431)
        if method == b"CONNECT":
            raise BadRequest("CONNECT is not supported over HTTP/2", status=501)
        if len(target) > state.max_request_line:
            raise BadRequest("request-target too long", status=414)
        raw_path, query = split_target(method, target)
        limit = state.max_body_size
        if limit:
            for name, value in headers:
                if name == b"content-length" and value.isdigit() and int(value) > limit:
                    raise BadRequest(_too_large(limit), status=413)
        path, raw_path = state.request_path(raw_path)
        extensions: dict[str, Any] = {"http.response.pathsend": {}, "http.response.trailers": {}}
        return state.http_scope(
            "2", method, path, raw_path, query, headers, self.client, self.server, self.scheme,
            extensions,
        )  # fmt: skip

    def _on_data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        size = event.flow_controlled_length
        data = event.data
        if not data and event.stream_ended is None:
            self._count("empty DATA frames")
        if stream is None or stream.finished:
            if size:  # a body nobody reads: give its window back at once
                self.conn.acknowledge_received_data(size, event.stream_id)
            return
        stream.receive_data(data, size)

    def _on_end(self, event: StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.more_body = False
            stream.body_deadline = 0.0
            stream.wake()

    def _on_reset(self, event: StreamReset) -> None:
        if event.remote_reset:
            self.resets += 1
            if self.resets > self.state.http2_max_resets:
                self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many streams reset (rapid reset)")
                return
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.disconnect()

    def _on_window(self, event: WindowUpdated) -> None:
        if event.delta < SMALL_WINDOW_UPDATE:
            self._count("small WINDOW_UPDATE frames")
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.wake_writer()
        else:
            for stream in self.streams.values():
                stream.wake_writer()

    def _on_settings(self, event: RemoteSettingsChanged) -> None:
        self._count("SETTINGS frames")
        if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            for stream in self.streams.values():
                stream.wake_writer()

    def _on_control(self, event: Event) -> None:
        self._count(f"{type(event).__name__} frames")

    def _on_goaway(self, event: ConnectionTerminated) -> None:
        # The client is done with this connection (h2 processes no frame after a
        # GOAWAY, so streams still in progress end here too).
        if self.streams:
            logger.debug(
                "%s sent GOAWAY (%s) with %d stream(s) in progress",
                format_client(self.client),
                _code_name(event.error_code),
                len(self.streams),
            )
        self._close()

    def _count(self, what: str) -> None:
        """Spend the control budget: frames that cost the server and serve no request."""
        self.control_frames += 1
        if self.control_frames > self.state.http2_max_control_frames:
            self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, f"flood of {what}")

    # -- lifecycle ---------------------------------------------------------------

    def stream_done(self, stream: H2Stream) -> None:
        """A stream's application call has returned: free its slot."""
        if self.streams.get(stream.stream_id) is not stream:
            return
        del self.streams[stream.stream_id]
        stream.release_body()
        if not stream.disconnected and not self.closed:
            if not stream.complete:
                self._reset(stream.stream_id, ErrorCodes.INTERNAL_ERROR)
            elif stream.more_body:  # answered before the body ended: stop the upload
                self._reset(stream.stream_id, ErrorCodes.NO_ERROR)
            self.flush_soon()
        if not self.streams:
            if self.draining:
                self._send_goaway()
            elif self.goaway_id < 0:
                self.deadline = self.loop.time() + self.state.timeout_keep_alive

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.conn.reset_stream(stream_id, code)
        except ProtocolError:
            pass  # closed by now on both sides

    def goaway(self, code: ErrorCodes, reason: str) -> None:
        """End the connection at once: GOAWAY with ``code`` (an error), then close."""
        if self.closed:
            return
        logger.warning(
            "closing the HTTP/2 connection from %s: %s (GOAWAY %s)",
            format_client(self.client),
            reason,
            code.name,
        )
        self.conn.close_connection(error_code=code)
        self._close()

    def _close(self) -> None:
        """Read no more frames; close once the last ones (a GOAWAY) are out.

        As HTTP/1.1's ``close_with()`` does: a close with unread bytes from
        the peer sends a reset, which can destroy the GOAWAY before the peer
        reads it, so the write side is shut first and what still arrives is
        dropped for up to ``LINGER`` seconds (TLS cannot half-close: closed).
        """
        self.closed = True
        self.flush()
        for stream in list(self.streams.values()):
            stream.disconnect()
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self.deadline = self.loop.time() + LINGER
        else:
            transport.close()

    def shutdown(self, restart: bool = False) -> None:
        """Draining: GOAWAY naming the last stream served, finish those, then close.

        The GOAWAY goes once no stream is in progress, or after ``DRAIN_BUSY``
        seconds whatever the streams: those it names are still served.
        """
        if self.closed or self.draining:
            return
        self.draining = self.loop.time() + DRAIN_BUSY
        if not self.streams:
            self._send_goaway()

    def _send_goaway(self) -> None:
        """A graceful GOAWAY: streams up to the last one received are served, then close.

        h2 processes nothing after its own GOAWAY, so the frame is written
        here and h2 goes on with the streams in progress; later streams are
        ignored, and the connection closes ``DRAIN_GRACE`` after its last stream.
        """
        if self.closed or self.goaway_id >= 0:
            return
        self.goaway_id = self.conn.highest_inbound_stream_id
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.goaway_id
        frame.error_code = ErrorCodes.NO_ERROR
        self.flush()
        self.transport.write(frame.serialize())
        self.deadline = self.loop.time() + DRAIN_GRACE

    def check_deadline(self, now: float) -> None:
        """The tick: budgets start over, and deadlines are checked."""
        self.control_frames = self.resets = 0
        transport = self.transport
        if self.write_paused or transport.is_closing():
            self._check_write(now)
            return
        if self.closed:
            if now >= self.deadline:
                transport.close()
            return
        if self.draining and now >= self.draining:
            self._send_goaway()
        if not self.streams:
            if self.deadline and now >= self.deadline:
                if self.goaway_id >= 0:
                    self._close()
                else:
                    logger.log(5, "closing idle connection from %s", format_client(self.client))
                    self._send_goaway()
            return
        for stream in list(self.streams.values()):
            if stream.window_deadline and now >= stream.window_deadline:
                logger.info(
                    "dropping the HTTP/2 connection from %s: its flow-control window stayed "
                    "closed for %gs",
                    format_client(self.client),
                    self.state.timeout_write,
                )
                self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "flow-control window kept closed")
                return
            if stream.body_deadline and now >= stream.body_deadline and not stream.body:
                stream.body_timed_out()
        self.flush()

    def _check_write(self, now: float) -> None:
        backlog = self.transport.get_write_buffer_size()
        previous, self.write_backlog = self.write_backlog, backlog
        if not backlog:
            self.write_deadline = 0.0
        elif not self.write_deadline or backlog < previous:
            self.write_deadline = now + self.state.timeout_write
        elif now >= self.write_deadline:
            logger.info(
                "dropping the connection from %s: it read nothing for %gs (%d bytes unsent)",
                format_client(self.client),
                self.state.timeout_write,
                backlog,
            )
            self.closed = True
            reset(self.transport)


_HANDLERS: dict[type[Event], Any] = {
    RequestReceived: H2Protocol._on_request,
    DataReceived: H2Protocol._on_data,
    StreamEnded: H2Protocol._on_end,
    StreamReset: H2Protocol._on_reset,
    WindowUpdated: H2Protocol._on_window,
    RemoteSettingsChanged: H2Protocol._on_settings,
    PingReceived: H2Protocol._on_control,
    PriorityUpdated: H2Protocol._on_control,
    UnknownFrameReceived: H2Protocol._on_control,
    ConnectionTerminated: H2Protocol._on_goaway,
}


class H2Stream:
    """One request on an HTTP/2 connection and its ASGI application call."""

    __slots__ = (
        "body",
        "body_bytes",
        "body_deadline",
        "body_done",
        "body_received",
        "complete",
        "conn",
        "disconnected",
        "expected",
        "finished",
        "head",
        "is_head",
        "more_body",
        "request_sent",
        "scope",
        "start_time",
        "started",
        "status",
        "stream_id",
        "task",
        "trailers",
        "trailers_declared",
        "unacked",
        "waiter",
        "window_deadline",
        "window_waiter",
        "written",
    )

    def __init__(self, conn: H2Protocol, stream_id: int, more_body: bool) -> None:
        self.conn = conn
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
        self.expected = -1
        self.written = 0
        self.body_bytes = 0
        self.trailers_declared = False
        self.trailers: list[tuple[bytes, bytes]] = []

    def start(self) -> None:
        state = self.conn.state
        if state.timed:
            self.start_time = time.perf_counter()
        self.task = state.new_task(self.run())

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
                self.refuse(413, _too_large(limit))
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

    async def run(self) -> None:
        conn = self.conn
        state = conn.state
        state.in_progress += 1
        state.cycles.add(self)
        try:
            await state.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self._app_failed(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if self.complete or self.disconnected:
                pass
            elif not self.started:
                logger.error("ASGI application returned without starting a response")
                self.refuse(500, "Internal Server Error")
            else:
                logger.error("ASGI application returned without completing the response")
        finally:
            state.in_progress -= 1
            state.requests += 1
            state.cycles.discard(self)
            conn.stream_done(self)

    def _app_failed(self, exc: BaseException) -> None:
        if self.disconnected:
            logger.debug("ASGI application raised after the client disconnected: %r", exc)
            return
        if isinstance(exc, InvalidMessage):
            logger.error("invalid ASGI message from the application: %s", exc)
        elif isinstance(exc, asyncio.CancelledError):
            logger.warning("request cancelled: %s %s", self.scope["method"], self.scope["path"])
        else:
            logger.error("exception in ASGI application", exc_info=exc)
        if not self.started:
            self.refuse(500, "Internal Server Error")

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
        while True:
            if self.body:
                body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body.clear()
                more_body = self.more_body
                self.request_sent = not more_body
                if self.unacked:  # the app has the bytes: the client may send as many again
                    conn = self.conn
                    conn.conn.acknowledge_received_data(self.unacked, self.stream_id)
                    self.unacked = 0
                    conn.flush_soon()
                    if more_body:
                        self.body_deadline = conn.loop.time() + conn.state.timeout_request_body
                return {"type": "http.request", "body": body, "more_body": more_body}
            if not self.request_sent:
                if not self.more_body:
                    self.request_sent = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                if self.disconnected:
                    return _DISCONNECT
            elif self.disconnected or self.complete:
                return _DISCONNECT
            self.waiter = self.conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    # -- send ----------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client disconnected")
        kind = message["type"]
        if kind == "http.response.body":
            await self._body(message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.start":
            self._start(message)
            self.conn.loop.call_soon(self._flush_head)
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
                if lower in _CONNECTION_FIELDS:
                    continue
                if lower == b"content-length":
                    if self.expected >= 0:
                        raise InvalidMessage("more than one content-length header")
                    self.expected = int(value)
                    if self.expected < 0:
                        raise ValueError("negative content-length")
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

    def _flush_head(self) -> None:
        if self.head is not None and not self.disconnected:
            self._send_head(False)

    async def _body(self, body: bytes, more_body: bool) -> None:
        if not self.started or self.body_done:
            raise InvalidMessage(
                "http.response.body sent "
                + ("after the body completed" if self.started else "before http.response.start")
            )
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise InvalidMessage(
                f"http.response.body: 'body' must be bytes, not {type(body).__name__}"
            )
        size = len(body)
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
                await self._write(body, end)
        if not more_body:
            self.body_done = True
            if end:
                self._complete()

    def _trailers(self, headers: Any, more: bool) -> None:
        if not self.trailers_declared or not self.body_done or self.complete:
            raise InvalidMessage("http.response.trailers sent out of order")
        for name, value in headers:
            lower = name.lower()
            check_field(lower, value, "trailer")
            if lower not in _CONNECTION_FIELDS:
                self.trailers.append((lower, bytes(value)))
        if more:
            return
        if self.trailers:
            self.conn.conn.send_headers(self.stream_id, self.trailers, end_stream=True)
        else:
            self.conn.conn.end_stream(self.stream_id)
        self.conn.flush_soon()
        self._complete()

    def _complete(self) -> None:
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
        self._complete()

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


def _code_name(code: int | None) -> str:
    if code is None:
        return "none"
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def _too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes (max_body_size)"
