"""HTTP/2 connections: h2 owns the frames, this module the I/O edge and the policy.

``H2Protocol`` feeds bytes to an ``h2`` connection (the sans-IO state machine:
framing, HPACK decoding, stream states, flow-control windows) and acts on the
events it returns; each request stream is an ``H2Stream`` (``_h2stream``), one
ASGI ``http`` call with ``http_version`` "2". No frame is parsed here. What
this module adds is what h2 leaves to its user: the request fields checked
(RFC 9113 8.2-8.3) and turned into a scope, the per-request limits of
HTTP/1.1, deadlines the worker's tick checks, budgets against the known frame
floods (each ends in GOAWAY ENHANCE_YOUR_CALM), one write per loop iteration,
and a GOAWAY that lets a draining worker finish the streams it has accepted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

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

from ._access import format_client
from ._h1 import BadRequest
from ._h2stream import CONNECTION_FIELDS, H2Stream, too_large
from ._hpack import StatelessEncoder
from ._transport import WriteFlow

if TYPE_CHECKING:
    from ._state import ServerState

logger = logging.getLogger("asgid.error")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STREAM_WINDOW = 262144  # request body bytes one stream may have buffered, unread by the app
CONNECTION_WINDOW = 1048576  # the same for all streams of a connection together
SMALL_WINDOW_UPDATE = 1024  # a WINDOW_UPDATE below this counts against the control budget
FLUSH_SIZE = 65536
LINGER = 2.0  # seconds a closing connection reads and drops what still arrives
DRAIN_GRACE = 1.0  # seconds a GOAWAY leaves for frames already in flight before the close
# A draining connection's GOAWAY waits for a moment without streams in
# progress, at most this long: h2-based clients (httpx, for one) fail the
# streams still in flight when a GOAWAY arrives, although RFC 9113 6.8 has
# them completed.
DRAIN_BUSY = 5.0
_NONE: frozenset[int] = frozenset()
_NAME_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")  # a lower-case token (RFC 9113 8.2.1)
_BAD_VALUE = re.compile(rb"[\0\r\n]|^[ \t]|[ \t]$")  # RFC 9113 8.2.1
_NAMES_OK: set[bytes] = set()
_METHOD_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a token (RFC 9110 9.1)
_HOST_OK: set[bytes] = set()


class Malformed(Exception):
    """A request RFC 9113 calls malformed: the stream is reset with PROTOCOL_ERROR."""


class H2Protocol(WriteFlow):
    """One HTTP/2 connection (TLS with ALPN ``h2``, or cleartext with prior knowledge)."""

    def __init__(
        self,
        state: ServerState,
        *,
        tls: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
    ) -> None:
        super().__init__()
        self.state = state
        self.loop = state.loop
        self.scheme = "https" if tls else "http"
        self.client = client
        self.server = server
        self.streams: dict[int, H2Stream] = {}
        self.deadline = 0.0  # no stream in progress: the connection is closed at this time
        self.closed = False  # no more frames are read: a GOAWAY ended the connection
        self.goaway_id = -1  # the last stream id a graceful GOAWAY promised to serve
        self.draining = 0.0  # when set: the time by which the GOAWAY goes, idle or not
        self.control_frames = 0  # in the current second: see _count()
        self.resets = 0
        self.budget_until = 0.0  # when the budgets start over
        self.doomed: set[int] | frozenset[int] = _NONE
        self.starting: list[H2Stream] = []  # requests of this read, started once it is handled
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
        try:
            for event in events:
                handler = handlers.get(type(event))
                if handler is not None:
                    handler(self, event)
                    if self.ended():  # a GOAWAY ended the connection
                        return
        finally:
            # The read's requests start once all of its frames are handled: the
            # app's first step may then run at once (ServerState.eager_task).
            # A stream refused (or cut off with its connection) within the read
            # never reaches the app.
            starting, self.starting = self.starting, []
            for stream in starting:
                if stream.finished:
                    self.stream_done(stream)
                else:
                    stream.start()
        if self.state.draining and not self.draining and self.streams:
            self.shutdown()  # accepted as the listener closed: serve what came, then GOAWAY
        self.flush()

    def ended(self) -> bool:
        return self.closed

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
        except BadRequest as refusal:
            stream.refuse(refusal.status, refusal.reason)
            return
        if state.limit_concurrency and state.in_progress >= state.limit_concurrency:
            stream.refuse(503, "too many requests in progress (limit_concurrency)")
            return
        self.starting.append(stream)

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
                if not _NAME_RE.fullmatch(name) or name in CONNECTION_FIELDS:
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
                elif name == b"expect" and value.lower() == b"100-continue":
                    stream.expect_continue = stream.more_body
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
        path, raw_path, query = state.request_target(method, target)
        limit = state.max_body_size
        if limit:
            for name, value in headers:
                if name == b"content-length" and value.isdigit() and int(value) > limit:
                    raise BadRequest(too_large(limit), status=413)
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
        if self.closed:
            return  # lingering or gone: no frames, no new deadline
        if not stream.disconnected:
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
        seconds (half the graceful timeout if that is shorter) whatever the
        streams: those it names are still served.
        """
        if self.closed or self.draining:
            return
        busy = min(DRAIN_BUSY, self.state.graceful_timeout / 2)
        self.draining = self.loop.time() + busy
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
        if not self.transport.is_closing():
            self.transport.write(frame.serialize())
        self.deadline = self.loop.time() + DRAIN_GRACE

    def check_deadline(self, now: float) -> None:
        """The tick: budgets start over each second, and deadlines are checked."""
        if now >= self.budget_until:  # a draining worker calls this 20 times a second
            self.control_frames = self.resets = 0
            self.budget_until = now + 0.9  # the tick comes every second, give or take
        transport = self.transport
        if self.write_paused or transport.is_closing():
            if self.writes_stalled(now, self.state.timeout_write, format_client(self.client)):
                self.closed = True
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


def _code_name(code: int | None) -> str:
    if code is None:
        return "none"
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)
