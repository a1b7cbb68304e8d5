"""WebSocket connections: the ASGI ``websocket`` scope on websockets' sans-IO protocol.

Framing, masking, fragmentation limits, ping/pong replies, the closing
handshake and permessage-deflate stay in the ``websockets`` library's
``ServerProtocol``; this module is the I/O edge around it. It writes what the
protocol wants sent, turns received frames into ASGI events, and applies
backpressure both ways: reading pauses while ``max_queue`` messages wait for
the app, and ``send`` waits while the transport is above its high-water mark.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from .._exceptions import WebSocketDisconnected
from ._h1 import BadRequest, InvalidMessage, Response
from ._transport import reset
from ._types import Message

if TYPE_CHECKING:
    from ._protocol import HttpProtocol

logger = logging.getLogger("asgid.error")

CLOSE_GOING_AWAY = 1001
CLOSE_SERVICE_RESTART = 1012
CLOSE_INTERNAL_ERROR = 1011
CLOSE_ABNORMAL = 1006
CLOSE_TIMEOUT = 5.0  # seconds to wait for the peer's half of the closing handshake

_CONNECT: dict[str, Any] = {"type": "websocket.connect"}


def _disconnect(code: int, reason: str) -> Message:
    return {"type": "websocket.disconnect", "code": code, "reason": reason}


def _replay(
    protocol: ServerProtocol, headers: list[tuple[bytes, bytes]], target: bytes
) -> Request | None:
    """Hand the request head httptools already parsed to the protocol.

    The protocol's own parser starts by reading the opening handshake, so it
    gets the same head, rebuilt; the frames that follow then parse as frames.
    None when the library refuses a head httptools accepted.
    """
    lines = [b"GET " + target + b" HTTP/1.1\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines.append(b"\r\n")
    protocol.receive_data(b"".join(lines))
    events = protocol.events_received()
    if len(events) != 1 or not isinstance(events[0], Request):
        return None
    return events[0]


class WebSocketSession:
    """One upgraded connection and its ASGI application call."""

    def __init__(self, conn: HttpProtocol, scope: dict[str, Any]) -> None:
        self.conn = conn
        self.scope = scope
        settings = conn.state.websocket
        self.settings = settings
        extensions = []
        if settings.per_message_deflate:
            bits = settings.deflate_window_bits
            extensions.append(
                ServerPerMessageDeflateFactory(
                    server_max_window_bits=bits,
                    client_max_window_bits=bits,
                    compress_settings={"memLevel": settings.deflate_mem_level},
                )
            )

        # The app chooses in websocket.accept, and the library asks during
        # accept(). The answer waits in a list, not on self: the library's
        # protocol object is a reference cycle of its own (its parser is a
        # generator), and must not pull this session and its connection in.
        subprotocol: list[str | None] = [None]
        self.subprotocol = subprotocol

        def select_subprotocol(protocol: ServerProtocol, offered: Any) -> Any:
            return subprotocol[0]

        self.protocol = ServerProtocol(
            extensions=extensions,
            select_subprotocol=select_subprotocol,
            max_size=settings.max_size or None,
        )
        self.inbox: deque[Message] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.connect_sent = False
        self.accepted = False
        self.accepted_at = 0.0
        self.closed = False  # the app may no longer send
        self.disconnect: Message | None = None  # delivered once the inbox is empty
        self.http_response: Response | None = None
        self.text_decoder: Any = None
        # One buffer, not a list of frames: a message of many tiny fragments
        # must cost its size in memory (max_size), not an object per frame.
        self.fragments = bytearray()
        self.fragmented = False  # a message's first frame had FIN clear
        self.fragment_opcode: Opcode | None = None
        self.read_paused = False
        self.last_activity = conn.state.now
        self.ping_sent_at = 0.0
        self.close_deadline = 0.0
        self.task: asyncio.Task[None] | None = None
        self.refusal: bytes | None = None  # the HTTP answer to an invalid handshake
        query = scope["query_string"]
        target = scope["raw_path"] + (b"?" + query if query else b"")
        request = _replay(self.protocol, scope["headers"], target)
        if request is None:
            # The library's parser refused the head (a body, an over-long line):
            # send its own answer (414, 431), or a plain 400 where it has none.
            answer = b"".join(self.protocol.data_to_send())
            if not answer.startswith(b"HTTP/1.1 "):
                raise BadRequest("invalid WebSocket opening handshake")
            self.refusal = answer
            return
        self.request = request
        # Checked now, answered by the app's websocket.accept (or refused) later.
        response = self.protocol.accept(request)
        if response.status_code != 101:
            self.protocol.send_response(response)
            self.refusal = b"".join(self.protocol.data_to_send())

    # -- from the connection ----------------------------------------------------

    def start(self, leftover: bytes) -> None:
        state = self.conn.state
        state.websockets.add(self)
        self.task = self.conn.loop.create_task(self.run())
        if leftover:
            self.feed(leftover)

    def feed(self, data: bytes) -> None:
        self.last_activity = self.conn.state.now
        self.protocol.receive_data(data)
        self._process()

    def eof(self) -> None:
        self.protocol.receive_eof()
        self._process()

    def lost(self) -> None:
        state = self.conn.state
        state.websockets.discard(self)
        self.closed = True
        if self.disconnect is None:
            code = CLOSE_ABNORMAL
            reason = ""
            rcvd = self.protocol.close_rcvd
            if rcvd is not None:
                code, reason = rcvd.code, rcvd.reason
            self.disconnect = _disconnect(code, reason)
        if self.accepted and state.access_log is not None:
            sent, rcvd = self.protocol.close_sent, self.protocol.close_rcvd
            close = rcvd or sent
            code = close.code if close is not None else CLOSE_ABNORMAL
            duration = state.loop.time() - self.accepted_at
            state.access_log.websocket(self.scope, "closed", code=code, duration=duration)
        self._wake()

    def _process(self) -> None:
        for event in self.protocol.events_received():
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
                if self.disconnect is None:  # nothing more once the connection failed
                    self._on_data_frame(opcode, bytes(event.data), event.fin)
            elif opcode is Opcode.PONG:
                self.ping_sent_at = 0.0
            elif opcode is Opcode.CLOSE:
                rcvd = self.protocol.close_rcvd
                code = rcvd.code if rcvd is not None else 1005
                reason = rcvd.reason if rcvd is not None else ""
                if self.disconnect is None:
                    self.disconnect = _disconnect(code, reason)
                self.closed = True
                self._wake()
        if self.protocol.parser_exc is not None and self.disconnect is None:
            self._failed()  # what arrived before the error is delivered first
        self.flush()
        if self.protocol.state is State.CLOSED and self.disconnect is None:
            self.lost()

    def _on_data_frame(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode is not Opcode.CONT:
            self.fragment_opcode = opcode
            if opcode is Opcode.TEXT and not fin:
                self.text_decoder = codecs.getincrementaldecoder("utf-8")()
        is_text = self.fragment_opcode is Opcode.TEXT
        if not fin:
            self.fragments += data
            self.fragmented = True
            if is_text:
                self._check_utf8(data, final=False)
            return
        if self.fragmented:
            self.fragments += data
            payload = bytes(self.fragments)
            self.fragments = bytearray()
            self.fragmented = False
            if is_text and not self._check_utf8(data, final=True):
                return
        else:
            payload = data
        if is_text:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._fail_utf8(exc)
                return
            message: Message = {"type": "websocket.receive", "text": text}
        else:
            message = {"type": "websocket.receive", "bytes": payload}
        self.text_decoder = None
        self.inbox.append(message)
        if len(self.inbox) >= self.settings.max_queue and not self.read_paused:
            self.read_paused = True
            self.conn.transport.pause_reading()
        self._wake()

    def _check_utf8(self, data: bytes, *, final: bool) -> bool:
        try:
            self.text_decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            self._fail_utf8(exc)
            return False
        return True

    def _fail_utf8(self, exc: UnicodeDecodeError) -> None:
        self.fragments = bytearray()
        self.fragmented = False
        self.protocol.fail(1007, f"invalid UTF-8: {exc.reason}")
        self._failed()

    def _failed(self) -> None:
        """The protocol failed the connection: the app may no longer send.

        The app's ``websocket.disconnect`` carries the code the server sent
        (1002, 1007, 1009, 1011), or 1006 where none was sent.
        """
        self.closed = True
        if self.disconnect is None:
            sent = self.protocol.close_sent
            code, reason = (sent.code, sent.reason) if sent is not None else (CLOSE_ABNORMAL, "")
            self.disconnect = _disconnect(code, reason)
        self._wake()

    def flush(self) -> None:
        transport = self.conn.transport
        chunks = self.protocol.data_to_send()
        if transport.is_closing():
            return  # the peer is gone (or the close is done): nothing more goes out
        for chunk in chunks:
            if chunk:
                transport.write(chunk)
            else:
                transport.close()  # the closing handshake is done: the server closes TCP

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- periodic (from the worker's tick) -----------------------------------------

    def check(self, now: float) -> None:
        settings = self.settings
        if self.close_deadline and now >= self.close_deadline:
            reset(self.conn.transport)
            return
        if not self.accepted or self.protocol.state is not State.OPEN:
            return
        if self.read_paused:
            # Reading waits for the app (backpressure), so a pong would wait unread
            # behind the data: the keepalive clock stops until reading resumes.
            self.last_activity = now
            if self.ping_sent_at:
                self.ping_sent_at = now
            return
        if (
            self.ping_sent_at
            and settings.ping_timeout
            and now - self.ping_sent_at > settings.ping_timeout
        ):
            logger.info("closing a WebSocket whose peer stopped answering pings")
            self.protocol.fail(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
            self._failed()
            self.flush()
            self.close_deadline = now + CLOSE_TIMEOUT
            return
        if (
            settings.ping_interval
            and not self.ping_sent_at
            and now - self.last_activity >= settings.ping_interval
        ):
            self.ping_sent_at = now
            self.last_activity = now
            self.protocol.send_ping(b"asgid")
            self.flush()

    def shutdown(self, code: int) -> None:
        """The worker is draining: ask the peer to close with ``code``.

        The tick stops while the worker drains, so the closing handshake's
        deadline gets a timer of its own: a peer that never answers the close
        must not hold the worker for the whole graceful timeout.
        """
        if self.accepted and self.protocol.state is State.OPEN:
            self.protocol.send_close(code, "server restarting" if code == 1012 else "going away")
            self.flush()
            self.close_deadline = self.conn.state.now + CLOSE_TIMEOUT
        elif not self.accepted and self.http_response is None:
            self.conn.transport.close()
        if self.close_deadline:
            loop = self.conn.loop
            loop.call_later(max(0.0, self.close_deadline - loop.time()), self._close_timed_out)

    def _close_timed_out(self) -> None:
        if self.conn in self.conn.state.connections:  # not lost yet
            logger.info("closing a WebSocket whose peer did not finish the closing handshake")
            reset(self.conn.transport)

    # -- the application call ---------------------------------------------------------

    async def run(self) -> None:
        state = self.conn.state
        try:
            await state.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self._app_failed(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.accepted and self.http_response is None and not self.closed:
                logger.error("ASGI application returned without accepting the WebSocket")
                self._send_http_error(500)
            elif self.accepted and self.protocol.state is State.OPEN:
                self.protocol.send_close(1000)
                self.flush()
                self.close_deadline = state.now + CLOSE_TIMEOUT
            elif self.http_response is not None and not self.http_response.complete:
                self.conn.transport.close()
        # The session stays in ``state.websockets`` until the connection is lost
        # (``lost``), so the tick still enforces the closing handshake's deadline.

    def _app_failed(self, exc: BaseException) -> None:
        # ``disconnect`` is set once the peer closed or the connection was lost
        # (a reset leaves the protocol OPEN): there is nobody left to tell.
        if self.disconnect is not None or (self.closed and self.protocol.state is not State.OPEN):
            logger.debug("WebSocket application raised after the connection closed: %r", exc)
            return
        if isinstance(exc, InvalidMessage):
            logger.error("invalid ASGI message from the application: %s", exc)
        else:
            logger.error("exception in ASGI application (WebSocket)", exc_info=exc)
        if self.accepted:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(CLOSE_INTERNAL_ERROR)
                self.flush()
                self.close_deadline = self.conn.state.now + CLOSE_TIMEOUT
        elif self.http_response is None:
            self._send_http_error(500)
        else:
            self.conn.transport.close()

    def _send_http_error(self, status: int) -> None:
        self.closed = True
        if self.conn.state.access_log is not None:
            self.conn.state.access_log.websocket(self.scope, "refused", status=status)
        self.conn.transport.write(
            self.conn.state.error_response(status, "WebSocket handshake refused")
        )
        self.conn.transport.close()

    async def receive(self) -> Message:
        if not self.connect_sent:
            self.connect_sent = True
            return _CONNECT
        while True:
            if self.inbox:
                message = self.inbox.popleft()
                if self.read_paused and len(self.inbox) < self.settings.max_queue:
                    self.read_paused = False
                    self.conn.transport.resume_reading()
                return message
            if self.disconnect is not None:
                return self.disconnect
            self.waiter = self.conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        protocol = self.protocol
        if kind == "websocket.send":
            if not self.accepted:
                raise InvalidMessage("websocket.send before websocket.accept")
            if self.conn.transport.is_closing() and self.disconnect is None:
                # A reset noticed on write: the transport drops writes without
                # a word from now on, and connection_lost() waits for the app
                # to yield; an app sending in a loop would spin.
                self.lost()
            if self.closed or protocol.state is not State.OPEN:
                raise WebSocketDisconnected("the WebSocket is closed")
            text = message.get("text")
            if text is not None:
                protocol.send_text(text.encode("utf-8"))
            else:
                data = message.get("bytes")
                if not isinstance(data, (bytes, bytearray)):
                    raise InvalidMessage("websocket.send needs 'text' or 'bytes'")
                protocol.send_binary(data)
            self.flush()
            if self.conn.write_paused:
                await self.conn.drain()
        elif kind == "websocket.accept":
            if self.accepted or self.http_response is not None or self.closed:
                raise InvalidMessage("websocket.accept sent out of order")
            self.subprotocol[0] = message.get("subprotocol")
            response = protocol.accept(self.request)
            for name, value in message.get("headers", ()):
                response.headers[name.decode("latin-1")] = value.decode("latin-1")
            protocol.send_response(response)
            self.accepted = True
            state = self.conn.state
            state.requests += 1
            self.accepted_at = state.loop.time()
            if state.access_log is not None:
                state.access_log.websocket(self.scope, "accepted")
            self.flush()
        elif kind == "websocket.close":
            if self.accepted:
                if protocol.state is State.OPEN:
                    protocol.send_close(message.get("code", 1000), message.get("reason") or "")
                    self.flush()
                    self.close_deadline = self.conn.state.now + CLOSE_TIMEOUT
                self.closed = True
            elif self.http_response is None and not self.closed:
                self._send_http_error(403)
            else:
                raise InvalidMessage("websocket.close sent out of order")
        elif kind == "websocket.http.response.start":
            if self.accepted or self.http_response is not None:
                raise InvalidMessage("websocket.http.response.start sent out of order")
            if self.closed or self.conn.transport.is_closing():
                raise WebSocketDisconnected("the client is gone")
            self.http_response = Response(
                self.conn.state.defaults, method=b"GET", version="1.1", keep_alive=False
            )
            self.http_response.start(message)
            if self.conn.state.access_log is not None:
                status = int(message.get("status", 200))
                self.conn.state.access_log.websocket(self.scope, "refused", status=status)
        elif kind == "websocket.http.response.body":
            response_ = self.http_response
            if response_ is None:
                raise InvalidMessage("websocket.http.response.body before its start")
            if self.closed or self.conn.transport.is_closing():
                raise WebSocketDisconnected("the client is gone")
            data = response_.body(message.get("body", b""), message.get("more_body", False))
            if data:
                self.conn.transport.write(data)
            if response_.complete:
                self.closed = True
                self.conn.transport.close()
        else:
            raise InvalidMessage(f"unexpected ASGI message {kind!r} for a websocket scope")
