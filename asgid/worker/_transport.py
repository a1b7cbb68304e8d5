"""Writing to a client: flow control, and ending a connection whose peer stopped reading.

``WriteFlow`` is what HTTP/1.1's and HTTP/2's protocols share of writing:
asyncio's ``pause_writing``/``resume_writing``, a ``drain()`` senders await,
and the write timeout the once-a-second tick checks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

from mypy_extensions import mypyc_attr

logger = logging.getLogger("asgid.error")

_RESET_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on with 0 s: close() sends RST


def reset(transport: asyncio.WriteTransport) -> None:
    """Drop a connection whose peer reads nothing, and what it would not read.

    ``abort()`` discards only asyncio's buffer: the kernel would go on
    sending what it holds to the peer from FIN-WAIT-1 (megabytes per socket
    on a fast link) until its own timers give up. A zero linger time makes
    the close a reset that frees it at once.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
        except OSError:
            pass  # already gone
    transport.abort()


@mypyc_attr(allow_interpreted_subclasses=True)  # HttpProtocol allows them
class WriteFlow:
    """Mixed into a protocol, which sets ``transport`` and ``loop``."""

    __slots__ = ("drain_waiter", "write_backlog", "write_deadline", "write_paused")

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        self.write_paused = False
        self.write_deadline = 0.0  # set by the tick while writes wait on the client; 0: none
        self.write_backlog = 0  # the write buffer's size at the last tick
        self.drain_waiter: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = 0.0  # the client read: the write timeout starts over
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        if self.drain_waiter is None:
            self.drain_waiter = self.loop.create_future()
        await self.drain_waiter

    def writes_stalled(self, now: float, timeout: float, client: str) -> bool:
        """Reset the connection if the client has read nothing for ``timeout``.

        asyncio tells when the buffer crosses its water marks, not when the
        client reads a little: progress is the buffer shrinking between ticks.
        """
        backlog = self.transport.get_write_buffer_size()
        previous, self.write_backlog = self.write_backlog, backlog
        if not backlog:
            self.write_deadline = 0.0
        elif not self.write_deadline or backlog < previous:
            self.write_deadline = now + timeout
        elif now >= self.write_deadline:
            logger.info(
                "dropping the connection from %s: it read nothing for %gs (%d bytes unsent)",
                client,
                timeout,
                backlog,
            )
            reset(self.transport)
            return True
        return False
