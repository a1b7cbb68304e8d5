"""The HTTP/1.1 connection: httptools callbacks in, ASGI request cycles out.

``HttpProtocol`` is the asyncio I/O edge for one connection. It feeds bytes to
httptools, asks ``_h1`` whether the head is acceptable and how the response is
framed, and runs one ``Cycle`` (an ASGI ``http`` call) per request, in order.
Flow control lives here: reading pauses while the app has not consumed a
request body or while pipelined requests wait, and ``send`` waits while the
transport is above its high-water mark. Timeouts are deadlines that the
worker's once-a-second tick checks, so the hot path sets no timers: one for
an unfinished head or an idle connection, one between two parts of a request
body, and one for writes stuck on a client that reads nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import httptools
from mypy_extensions import mypyc_attr

from .._exceptions import ClientDisconnected
from .._logging import TRACE
from ._access import format_client
from ._cycle import AppCall
from ._h1 import (
    PLAIN_HEAD,
    BadRequest,
    InvalidMessage,
    Response,
    check_head,
    unknown_method,
)
from ._proxy import apply_proxy_headers
from ._transport import WriteFlow
from ._types import Message
from ._websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_SERVICE_RESTART,
    WebSocketSession,
)

if TYPE_CHECKING:
    from ._state import ServerState

logger = logging.getLogger("asgid.error")
access_logger = logging.getLogger("asgid.access")

BODY_HIGH_WATER = 65536
FILE_CHUNK = 262144  # bytes read per write by http.response.pathsend
DRAIN_GRACE = 1.0  # seconds a draining worker waits for an idle connection's next request
LINGER = 2.0  # seconds an error response waits, reading and dropping, before closing
_NO_HEAD, _HEAD_BEGUN = -1, -2  # HttpProtocol.head_bytes outside of a request head
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # how an HTTP/2 client with prior knowledge begins


@mypyc_attr(allow_interpreted_subclasses=True)  # the protocol tests observe it from a subclass
class HttpProtocol(WriteFlow):
    """One HTTP/1.1 connection, as an asyncio protocol.

    It has asyncio.Protocol's methods without deriving from it: compiled
    (see setup.py), a class can only derive from compiled classes.
    """

    __deletable__ = ("parser",)  # for mypyc: connection_lost drops the parser
    __slots__ = (
        "active",
        "body_deadline",
        "body_received",
        "client",
        "closing",
        "cycle",
        "deadline",
        "fields",
        "head_bytes",
        "headers",
        "lingering",
        "loop",
        "method",
        "parser",
        "pending_error",
        "pipeline",
        "read_eof",
        "read_paused",
        "read_size",
        "scheme",
        "server",
        "sniffed",
        "sniffing",
        "starting",
        "state",
        "transport",
        "upgrade",
        "url",
        "ws",
    )

    transport: asyncio.Transport  # from connection_made on

    def __init__(
        self,
        state: ServerState,
        *,
        tls: bool = False,
        server: tuple[str, int | None] | None = None,
    ) -> None:
        """``server``: the local address every connection of this listener has, if one does."""
        super().__init__()
        self.state = state
        self.loop = state.loop
        self.parser = httptools.HttpRequestParser(self)
        self.scheme = "https" if tls else "http"
        self.client: tuple[str, int] | None = None
        self.server = server
        self.url = b""
        self.method = b""  # of the request being parsed; b"" until its request line is read
        self.headers: list[tuple[bytes, bytes]] = []
        # Where on_header puts a field: the head's headers, then a chunked body's trailers.
        self.fields: list[tuple[bytes, bytes]] | _Trailers = self.headers
        self.head_bytes = _NO_HEAD
        self.read_size = 0  # bytes in the read being parsed
        self.cycle: Cycle | None = None  # the request whose bytes are being parsed
        self.active: Cycle | None = None  # the request whose response is being sent
        self.starting: Cycle | None = None  # the active request, to start once the read is parsed
        self.pipeline: list[Cycle] = []  # read, waiting for the active one to be answered
        self.deadline = 0.0  # an unfinished head, or an idle connection, is closed at this time
        self.body_deadline = 0.0  # the next part of the request body is due by this time
        self.body_received = 0
        self.read_paused = False
        self.read_eof = False
        self.closing = False
        self.lingering = False  # a final error response was sent; see close_with()
        self.pending_error = b""
        self.upgrade: WebSocketSession | None = None  # accepted Upgrade head, not yet switched
        self.ws: WebSocketSession | None = None
        self.sniffing = state.http2_cleartext and not tls  # an h2c preface may come first
        self.sniffed = b""

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        self.client = _address(transport.get_extra_info("peername"))
        if self.server is None:
            self.server = local_address(transport.get_extra_info("sockname"))
        state = self.state
        if self.scheme == "https" and state.http2:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                self._switch_to_h2(b"")
                return
        state.connections.add(self)
        # The loop's clock, not the tick's state.now: that one may be a second old,
        # which would cut timeouts short.
        self.deadline = self.loop.time() + state.timeout_request_header
        if state.draining:  # accepted just as the listener closed: serve one request
            self.deadline = min(self.deadline, self.loop.time() + DRAIN_GRACE)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s - connection open", format_client(self.client))

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.closing = True
        if logger.isEnabledFor(logging.DEBUG):
            how = f" ({exc!r})" if exc is not None else ""
            logger.debug("%s - connection closed%s", format_client(self.client), how)
        # The parser holds this protocol's callbacks, and a WebSocket session
        # the protocol itself: reference cycles that only the cycle collector
        # would free, with the transport and a dozen more objects each.
        del self.parser
        self.upgrade = None
        if self.ws is not None:
            self.ws.lost()
            self.ws = None
        if self.active is not None:
            self.active.disconnect()
        for cycle in self.pipeline:
            cycle.disconnect()
        if self.cycle is not None:
            self.cycle.disconnect()
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        if self.ws is not None:
            self.ws.eof()
            return False
        # A half-closed client may still read its answer; close once it is written.
        # The app learns the client is gone from receive(): a request that was
        # cut short is disconnected, a complete one sees http.disconnect next.
        if self.active is None:
            return False
        self.closing = True
        self.read_eof = True
        if self.cycle is not None:
            self.cycle.disconnect()
        self.active.wake()
        return True

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self.ws.feed(data)
            return
        if self.closing:
            return
        if self.sniffing:
            data = self._sniff(data)
            if not data:
                return
        self.read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data[exc.args[0] :] if exc.args else b"")
        except httptools.HttpParserCallbackError as exc:
            error = exc.__context__
            if isinstance(error, _Answered):
                return  # the connection is closing with its answer: read no further
            if isinstance(error, BadRequest):
                self.fail(error.status, error.reason)
            else:  # pragma: no cover - a bug in asgid, not in the request
                logger.exception("error while parsing a request", exc_info=error)
                self.fail(500, "Internal Server Error")
        except httptools.HttpParserInvalidMethodError:
            if self._after_last_request():
                return
            if unknown_method(data):
                self.fail(501, "method not implemented")  # RFC 9110 9.1
            else:
                self.fail(400, "invalid method")
        except httptools.HttpParserError as exc:
            if self._after_last_request():
                return  # RFC 9112 9.6: what follows a closing request is not read
            reason = str(exc) or "malformed request"
            self.fail(505 if "HTTP version" in reason else 400, reason)
        else:
            if self.head_bytes != _NO_HEAD:
                self._head_unfinished()
            cycle = self.cycle
            # A body still coming is due within the timeout from this read on,
            # unless its client waits for a 100 Continue (sent when the app
            # first asks for the body; the clock starts then).
            if cycle is not None and not cycle.expect_continue:
                self.body_deadline = self.loop.time() + self.state.timeout_request_body
        finally:
            cycle = self.starting
            if cycle is not None:  # the read is parsed: its request may start now
                self.starting = None
                cycle.start(eager=True)

    def _sniff(self, data: bytes) -> bytes:
        """The first bytes of a cleartext connection: HTTP/2 with prior knowledge, or not.

        Returns what HTTP/1.1 should parse: b"" while a preface may still be
        arriving, or once the connection has gone over to HTTP/2.
        """
        data = self.sniffed + data
        if data[: len(PREFACE)] != PREFACE[: len(data)]:
            self.sniffing = False
            self.sniffed = b""
            return data
        if len(data) < len(PREFACE):
            self.sniffed = data
            return b""
        self.sniffing = False
        self.sniffed = b""
        self.state.connections.discard(self)
        self.closing = True
        self._switch_to_h2(data)
        return b""

    def _switch_to_h2(self, data: bytes) -> None:
        from ._h2 import H2Protocol  # h2 is imported by the first HTTP/2 connection

        protocol = H2Protocol(
            self.state, tls=self.scheme == "https", client=self.client, server=self.server
        )
        transport = self.transport
        transport.set_protocol(cast(asyncio.Protocol, protocol))  # see the class docstring
        del self.parser  # this protocol is done: leave no cycle behind (see connection_lost)
        protocol.connection_made(transport)
        if data:
            protocol.data_received(data)

    def _after_last_request(self) -> bool:
        return self.closing and self.cycle is None

    def _head_unfinished(self) -> None:
        """A read ended inside a request head: start its clock, count what follows.

        A head that arrives in one read (almost all of them) never gets here,
        so the hot path reads no clock. httptools buffers a header line until
        it ends and only then calls on_header, so an endless line must be
        caught here: count the reads that arrive while one head stays unfinished.
        """
        state = self.state
        if self.head_bytes == _HEAD_BEGUN:
            self.head_bytes = 0  # how much of this read was the head is unknown
            self.deadline = self.loop.time() + state.timeout_request_header
            return
        self.head_bytes += self.read_size
        if self.head_bytes > state.max_header_size + state.max_request_line + 1024:
            self.fail(431, "request header fields too large")

    # -- httptools callbacks ------------------------------------------------

    # No on_message_begin: httptools calls only the callbacks a protocol has,
    # and a request's first one is on_url, for its request line.

    def on_url(self, url: bytes) -> None:
        if self.head_bytes == _NO_HEAD:  # a request begins
            self.url = url
            self.method = self.parser.get_method()
            self.headers = self.fields = []
            self.head_bytes = _HEAD_BEGUN
        else:
            self.url += url  # the request line came in more than one read
        if len(self.url) > self.state.max_request_line:
            raise BadRequest("request-target too long", status=414)

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools keeps trailing whitespace (RFC 9112 5.1)
        self.fields.append((name.lower(), value.rstrip(b" \t")))

    def _check_head_size(self) -> None:
        # The size the limit counts: target, names and values, ": " and CRLF.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.state.max_header_size:
            raise BadRequest("request header fields too large", status=431)

    def on_headers_complete(self) -> None:
        state = self.state
        if len(self.headers) > state.max_headers:
            raise BadRequest("too many header fields", status=431)
        # A head that came in one read no larger than the limit is within it:
        # measure only heads that came in parts or in one large read.
        if self.head_bytes != _HEAD_BEGUN or self.read_size > state.max_header_size:
            self._check_head_size()
        self.head_bytes = _NO_HEAD
        parser = self.parser
        headers = self.headers
        keep_alive = parser.should_keep_alive()
        version, head = check_head(headers, keep_alive, parser.get_http_version)
        method = self.method
        path, raw_path, query = state.request_target(method, self.url)
        self.deadline = 0.0
        keep_alive = keep_alive and not state.draining
        extensions: dict[str, Any] = {"http.response.pathsend": {}}
        if head is not PLAIN_HEAD:  # a body, Expect, TE or Upgrade
            limit = state.max_body_size
            if limit and head.content_length and int(head.content_length) > limit:
                raise BadRequest(_too_large(limit), status=413)
            if head.chunked:  # trailer fields may follow the body: count them, keep them out
                self.fields = _Trailers(state.max_headers, state.max_header_size)
            if head.trailers:
                extensions["http.response.trailers"] = {}
            if head.upgrade is not None:
                if head.upgrade == b"websocket" and method == b"GET" and self.active is None:
                    self._prepare_websocket(version, path, raw_path, query, self.client)
                    return
                keep_alive = False  # other upgrades are served as plain HTTP, then closed
        if state.limit_concurrency and state.in_progress >= state.limit_concurrency:
            raise BadRequest("too many requests in progress (limit_concurrency)", status=503)
        scope = state.http_scope(
            version, method, path, raw_path, query, headers, self.client, self.server, self.scheme,
            extensions,
        )  # fmt: skip
        response = Response(state.defaults, method, version, keep_alive, head.trailers)
        cycle = Cycle(self, scope, response, head.expect_continue)
        self.cycle = cycle
        self.body_received = 0
        if self.active is None:
            # Started once httptools is done with this read: the app's first
            # step may then run at once, outside the parser's callbacks.
            self.active = self.starting = cycle
        else:
            self.pipeline.append(cycle)
            self._pause_reading()

    def _prepare_websocket(
        self,
        version: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        client: tuple[str, int] | None,
    ) -> None:
        state = self.state
        headers = self.headers
        scheme = "wss" if self.scheme == "https" else "ws"
        if state.proxies is not None:
            client, scheme = apply_proxy_headers(state.proxies, headers, client, scheme)
        subprotocols = [
            token.strip().decode("latin-1")
            for name, value in headers
            if name == b"sec-websocket-protocol"
            for token in value.split(b",")
            if token.strip()
        ]
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": state.asgi_info,
            "http_version": version,
            "scheme": scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": state.root_path,
            "headers": headers,
            "client": client,
            "server": self.server,
            "subprotocols": subprotocols,
            "state": state.lifespan_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        session = WebSocketSession(self, scope)
        if session.refusal is not None:
            self.close_with(session.refusal)
            raise _Answered  # httptools would go on parsing what follows in this read
        self.upgrade = session

    def on_body(self, body: bytes) -> None:
        state = self.state
        if state.max_body_size:
            self.body_received += len(body)
            if self.body_received > state.max_body_size:
                raise BadRequest(_too_large(state.max_body_size), status=413)
        cycle = self.cycle
        if cycle is None or cycle.finished:
            return  # a body the application did not want: read and drop it
        cycle.body.append(body)
        cycle.body_size += len(body)
        if cycle.body_size > BODY_HIGH_WATER:
            self._pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        self.method = b""  # the next request's is not known until its request line
        self.body_deadline = 0.0
        cycle = self.cycle
        if cycle is not None:
            self.cycle = None
            cycle.more_body = False
            if cycle.waiter is not None:
                cycle.wake()
            if self.active is None and not self.pipeline:
                # Answered before its body was read: idle from now on.
                self.deadline = self.loop.time() + self.state.timeout_keep_alive
        if not self.parser.should_keep_alive():
            self.closing = True  # no further request is read (RFC 9112 9.6)

    # -- flow control and lifecycle ------------------------------------------

    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.pipeline:
            cycle = self.cycle
            if cycle is None or cycle.body_size <= BODY_HIGH_WATER or cycle.finished:
                self.read_paused = False
                self.transport.resume_reading()
                if self.body_deadline:  # the wait was ours, not the client's
                    self.body_deadline = self.loop.time() + self.state.timeout_request_body

    def response_complete(self, cycle: Cycle) -> None:
        """The active request's last bytes were written: move to the next one."""
        if cycle is not self.active:
            return
        self.active = None
        state = self.state
        if state.timed:
            cycle.record()
        if not cycle.response.keep_alive or cycle.expect_continue:
            # What was said: nothing more on this connection. A body the app
            # did not read may still be arriving: do not reset the answer away.
            if self.cycle is not None:
                self.close_with(b"")
            else:
                self.transport.close()
            return
        if self.pipeline:  # requests that came before any error are answered first
            self.active = self.pipeline.pop(0)
            self.active.start()
        elif self.pending_error:
            self.close_with(self.pending_error)
            return
        elif self.closing:
            self.transport.close()
            return
        elif self.cycle is None:  # idle from now on; else when the unread body ends
            self.deadline = self.loop.time() + state.timeout_keep_alive
        if self.read_paused:
            self.resume_reading()

    def fail(self, status: int, reason: str) -> None:
        """Answer a malformed request with ``status`` and close the connection.

        Requests queued before it are answered first; nothing after it is
        read. A request whose response has begun gets no error: it would
        read as the answer to the next one; the connection just ends.
        """
        self.closing = True
        self._pause_reading()
        logger.debug("%s from %s: %s", status, format_client(self.client), reason)
        cycle = self.cycle
        if cycle is None:
            head = self.method == b"HEAD"
        else:
            cycle.disconnect()  # its body will never arrive in full
            if self.starting is cycle:
                self.starting = None  # the app never sees this request
            elif cycle.task is not None and cycle not in self.state.cycles:
                cycle.task.cancel()  # the app has not run yet: it never sees this request
            if cycle in self.pipeline:
                self.pipeline.remove(cycle)  # the error is its answer
            if cycle.response.started:
                if self.active is None:  # answered in full already
                    self.close_with(b"")
                # Else the app's next send() raises ClientDisconnected and the
                # connection closes: the response is cut short.
                return
            head = cycle.scope["method"] == "HEAD"
        data = self.state.error_response(status, reason, head=head)
        if self.active is None or self.active is cycle:
            self.active = None
            self.close_with(data)
        else:
            self.pending_error = data  # sent by response_complete() once its turn comes

    def close_with(self, data: bytes) -> None:
        """Send a final error response, then close without resetting it away.

        Closing a socket with unread request bytes makes the kernel send a
        reset, which can destroy the response before the client reads it (a
        client still uploading a body it was refused is the usual case). So
        the write side is shut first and what still arrives is read and
        dropped for up to ``LINGER`` seconds, until the client closes too.
        """
        self.closing = True
        self.lingering = True
        self.body_deadline = 0.0
        transport = self.transport
        transport.write(data)
        if not transport.can_write_eof():  # TLS: close_notify must come last
            transport.close()
            return
        transport.write_eof()
        self.deadline = self.loop.time() + LINGER
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()

    def _upgraded(self, leftover: bytes) -> None:
        """httptools stopped after an Upgrade head; ``leftover`` follows it."""
        session = self.upgrade
        if session is None:
            # Not a WebSocket: the request went to the app as plain HTTP with
            # keep-alive off, so whatever follows is not read.
            self.closing = True
            return
        self.upgrade = None
        self.ws = session
        self.deadline = 0.0
        session.start(leftover)

    def shutdown(self, restart: bool = False) -> None:
        """Draining: finish what is in flight, then close.

        WebSockets are asked to close with 1012 (restart) or 1001 (going away).
        """
        if self.active is None and self.cycle is None and self.ws is None:
            # Between requests, the next one may already be on its way: closing
            # now would reset it. Serve it if it comes soon (draining turns
            # keep-alive off); a request head already arriving keeps its timeout.
            grace = self.loop.time() + DRAIN_GRACE
            if self.head_bytes == _NO_HEAD and not 0 < self.deadline <= grace:
                self.deadline = grace
            return
        self.closing = True
        if self.ws is not None:
            self.ws.shutdown(CLOSE_SERVICE_RESTART if restart else CLOSE_GOING_AWAY)
            return
        # Requests already read are served, in order; the last one's response
        # says connection: close (one already started ends by closing anyway).
        last = self.pipeline[-1] if self.pipeline else self.active
        if last is not None and not last.response.started:
            last.response.keep_alive = False

    def check_deadline(self, now: float) -> None:
        """The tick: close this connection if a client has kept it waiting too long."""
        transport = self.transport
        if self.write_paused or transport.is_closing():
            self.writes_stalled(now, self.state.timeout_write, format_client(self.client))
        elif self.body_deadline and now >= self.body_deadline and not self.read_paused:
            self._body_timed_out()
        elif self.deadline and now >= self.deadline and self.active is None:
            logger.log(TRACE, "closing idle connection from %s", format_client(self.client))
            transport.close()

    def _body_timed_out(self) -> None:
        cycle = self.cycle
        timeout = self.state.timeout_request_body
        logger.info(
            "closing the connection from %s: no request body for %gs",
            format_client(self.client),
            timeout,
        )
        self.body_deadline = 0.0
        if cycle is not None and cycle.response.started:
            self.closing = True  # too late for a 408: just end it
            cycle.disconnect()
            self.transport.close()
        else:
            self.fail(408, f"no request body for {timeout:g}s")


class Cycle(AppCall):
    """One HTTP/1.1 request and its ASGI application call."""

    conn: HttpProtocol

    __slots__ = (
        "body_size",
        "conn",
        "disconnected",
        "expect_continue",
        "finished",
        "response",
        "scope",
        "start_time",
        "task",
    )

    def __init__(
        self,
        conn: HttpProtocol,
        scope: dict[str, Any],
        response: Response,
        expect_continue: bool,
    ) -> None:
        self.conn = conn
        self.state = conn.state
        self.scope = scope
        self.response = response
        self.expect_continue = expect_continue
        self.body: list[bytes] = []
        self.body_size = 0
        self.more_body = True
        self.request_sent = False
        self.disconnected = False
        self.finished = False  # response complete or abandoned; body no longer wanted
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.start_time = 0.0

    def start(self, *, eager: bool = False) -> None:
        """Run the application; ``eager``: its first step now, where Python can.

        A pipelined request is started by the one before it, from that one's
        ``send``: eagerly, a long pipeline would nest one inside the next.
        """
        state = self.state
        if state.timed:
            self.start_time = time.perf_counter()
        self.task = (state.eager_task if eager else state.new_task)(self.run())

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def disconnect(self) -> None:
        self.disconnected = True
        self.finished = True
        self.wake()

    # -- the application call -----------------------------------------------

    # -- how an application call ended, on this connection (see _cycle.AppCall) --

    def _complete(self) -> bool:
        return self.response.complete

    def _gone(self) -> bool:
        return self.disconnected or self.conn.read_eof

    def _started(self) -> bool:
        return self.response.started

    def _answer_500(self) -> None:
        self._send_error(500)

    def _send_error(self, status: int) -> None:
        conn = self.conn
        self.finished = True
        self.response.status = status
        if conn.active is self:
            conn.active = None
            if conn.state.timed:
                self.record()
            head = self.scope["method"] == "HEAD"
            conn.close_with(conn.state.error_response(status, "Internal Server Error", head=head))

    def _abort(self) -> None:
        self.finished = True
        if not self.conn.lingering:  # else an error answer is on its way out: let it go
            self.conn.transport.close()

    # -- receive -------------------------------------------------------------

    async def receive(self) -> Message:
        if self.expect_continue and not self.response.started and not self.disconnected:
            self.expect_continue = False
            conn = self.conn
            conn.transport.write(CONTINUE)
            if conn.cycle is self:  # the body is due from now on
                conn.body_deadline = conn.loop.time() + conn.state.timeout_request_body
        return await self._request_message()

    def _body_taken(self, more_body: bool) -> None:
        self.body_size = 0
        if self.conn.read_paused:
            self.conn.resume_reading()

    def _over(self) -> bool:
        return self.response.complete or self.conn.read_eof

    # -- send ----------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client disconnected")
        response = self.response
        conn = self.conn
        kind = message["type"]
        if kind == "http.response.body":
            data = response.body(message.get("body", b""), message.get("more_body", False))
            self.state.pending_heads.pop(self, None)  # a waiting head leaves with this body
            if data:
                conn.transport.write(data)
            if response.complete:
                self.finished = True
                conn.response_complete(self)
                if self.waiter is not None:  # the app waits in receive(): http.disconnect
                    self.wake()
            elif conn.write_paused or conn.transport.is_closing():
                await self._after_write()
        elif kind == "http.response.start":
            response.start(message)
            if self.expect_continue:
                response.keep_alive = False  # the 100 was never sent: the body may follow
            self.state.head_pending(self)
        elif kind == "http.response.trailers":
            data = response.trailers(
                message.get("headers", ()), message.get("more_trailers", False)
            )
            if data:
                conn.transport.write(data)
            if response.complete:
                self.finished = True
                conn.response_complete(self)
                self.wake()
        elif kind == "http.response.pathsend":
            await self._send_file(message["path"])
        else:
            raise InvalidMessage(f"unexpected ASGI message {kind!r} for an http scope")

    def flush_head(self) -> None:
        if not self.disconnected:
            data = self.response.pending_head()
            if data:
                self.conn.transport.write(data)

    async def _send_file(self, path: str) -> None:
        conn = self.conn
        try:
            with open(path, "rb") as f:  # noqa: ASYNC230 - a local file's open() does not block
                size = os.fstat(f.fileno()).st_size
                conn.transport.write(self.response.head_for_file(size))
                if self.response.sends_body and size:
                    await self._write_file(f, size)
        except OSError as exc:
            if self.disconnected:
                raise ClientDisconnected("the client disconnected") from exc
            raise
        self.finished = True
        conn.response_complete(self)
        self.wake()

    async def _write_file(self, f: BinaryIO, size: int) -> None:
        # uvloop has no loop.sendfile(): copy in chunks, waiting while the
        # transport is above its high-water mark (what asyncio's fallback does).
        conn = self.conn
        while size > 0:
            chunk = f.read(min(FILE_CHUNK, size))
            if not chunk:
                raise OSError(f"file {f.name!r} shrank while it was being sent")
            conn.transport.write(chunk)
            size -= len(chunk)
            await self._after_write()

    async def _after_write(self) -> None:
        """Wait while the transport is full; raise once the client is gone.

        A write that found the peer gone (a reset noticed while reading was
        paused) leaves the transport closing, dropping later writes without a
        word, and connection_lost() comes only once the app yields: an app
        sending in a loop would spin.
        """
        conn = self.conn
        if conn.write_paused:
            await conn.drain()
        elif conn.transport.is_closing():
            self.disconnect()
        if self.disconnected:
            raise ClientDisconnected("the client disconnected")

    def record(self) -> None:
        """The response is over: count it, and log it."""
        response = self.response
        self.state.record(self.scope, response.status, response.body_bytes, self.start_time)


class _Trailers:
    """The trailer fields after a chunked request body: counted, then dropped.

    They must never join the header section the app already holds (RFC 9110
    6.5.1: `host` or `authorization` sent there would change the request after
    the fact), and ASGI has no way to pass request trailers on; they still
    count against the limits on a head.
    """

    __slots__ = ("count", "max_count", "max_size", "size")

    def __init__(self, max_count: int, max_size: int) -> None:
        self.max_count = max_count
        self.max_size = max_size
        self.count = 0
        self.size = 0

    def append(self, field: tuple[bytes, bytes]) -> None:
        name, value = field
        self.count += 1
        self.size += len(name) + len(value) + 4
        if self.count > self.max_count:
            raise BadRequest("too many trailer fields", status=431)
        if self.size > self.max_size:
            raise BadRequest("trailer fields too large", status=431)


class _Answered(Exception):
    """Raised from a parser callback once the connection's answer is written."""


def _too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes (max_body_size)"


def _address(info: Any) -> tuple[str, int] | None:
    if type(info) is tuple:
        return info if len(info) == 2 else info[:2]  # IPv6 adds flowinfo and scope id
    return None


def local_address(sockname: Any) -> tuple[str, int | None] | None:
    """The scope's ``server`` for a socket's local address."""
    if isinstance(sockname, str) and sockname:
        return (sockname, None)  # a Unix socket: [path, None] in the scope
    return _address(sockname)
