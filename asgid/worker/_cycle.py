"""The ASGI ``http`` call both protocols share: run the app, judge how it ended.

``AppCall.run`` calls the application once, keeps the worker's counters and
decides what its ending means: a finished response, a client that went away,
no response at all (a 500), half a response (cut off), or an exception (a
500 before the response starts, cut off after). How each is said on the wire
belongs to the subclass: HTTP/1.1's ``_protocol.Cycle`` closes or answers on
its connection, HTTP/2's ``_h2stream.H2Stream`` answers or resets its stream.
It never touches a socket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ._h1 import InvalidMessage
from ._types import Message

if TYPE_CHECKING:
    from ._state import ServerState

logger = logging.getLogger("asgid.error")


_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


class AppCall:
    """One application call; subclasses provide the attributes and the wire."""

    __slots__ = ("body", "more_body", "request_sent", "state", "waiter")

    state: ServerState  # the worker's; set by the subclass
    scope: dict[str, Any]
    disconnected: bool
    task: asyncio.Task[None] | None
    body: list[bytes]  # request body chunks the app has not received yet
    more_body: bool  # more of the request body is to come from the client
    request_sent: bool  # the app has received the last http.request
    waiter: asyncio.Future[None] | None  # what receive() waits on

    async def receive(self) -> Message:
        raise NotImplementedError

    async def _request_message(self) -> Message:
        """The app's next ``http.request`` (the body as it came), then ``http.disconnect``
        once the client is gone or the response is over."""
        while True:
            if self.body:
                body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body.clear()
                more_body = self.more_body
                self.request_sent = not more_body
                self._body_taken(more_body)
                return {"type": "http.request", "body": body, "more_body": more_body}
            if not self.request_sent:
                if not self.more_body:
                    self.request_sent = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                if self.disconnected:
                    return _DISCONNECT
            elif self.disconnected or self._over():
                return _DISCONNECT
            self.waiter = self.state.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def _body_taken(self, more_body: bool) -> None:
        """The app has what was buffered: let the client send more."""
        raise NotImplementedError

    def _over(self) -> bool:
        """Nothing more can come: the response is complete, or the client's side closed."""
        raise NotImplementedError

    async def send(self, message: Message) -> None:
        raise NotImplementedError

    def flush_head(self) -> None:
        """Write a started response's head that is still waiting for its body."""
        raise NotImplementedError

    async def run(self) -> None:
        state = self.state
        state.cycles.add(self)
        try:
            await state.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self._app_failed(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if self._complete():
                pass
            elif self._gone():
                self._abort()  # the client went away: end our side too
            elif not self._started():
                logger.error("ASGI application returned without starting a response")
                self._answer_500()
            else:
                logger.error("ASGI application returned without completing the response")
                self._abort()
        finally:
            state.requests += 1
            state.cycles.discard(self)

    def _app_failed(self, exc: BaseException) -> None:
        if self.disconnected:
            logger.debug("ASGI application raised after the client disconnected: %r", exc)
            self._abort()
            return
        if isinstance(exc, InvalidMessage):
            logger.error("invalid ASGI message from the application: %s", exc)
        elif isinstance(exc, asyncio.CancelledError):
            logger.warning("request cancelled: %s %s", self.scope["method"], self.scope["path"])
        else:
            logger.error("exception in ASGI application", exc_info=exc)
        if not self._started():
            self._answer_500()
        else:
            self._abort()

    # -- what the subclass says on the wire ------------------------------------------

    def _complete(self) -> bool:
        """Whether the whole response was sent."""
        raise NotImplementedError

    def _gone(self) -> bool:
        """Whether the client went away (or stopped sending the request)."""
        raise NotImplementedError

    def _started(self) -> bool:
        """Whether the response has begun."""
        raise NotImplementedError

    def _answer_500(self) -> None:
        """Answer 500 Internal Server Error: no response was started."""
        raise NotImplementedError

    def _abort(self) -> None:
        """Cut the response short."""
        raise NotImplementedError
