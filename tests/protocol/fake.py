"""An in-process connection: asgid's HTTP protocol on a fake transport, no sockets.

``FakeTransport`` behaves as asyncio's and uvloop's transports do where the
protocol can tell (write buffering and flow control, close versus abort,
``connection_lost`` on the next loop iteration, errors for writes after the
end). ``Connection`` drives one ``HttpProtocol`` with bytes and runs the loop
until it is idle, so HTTP behaviour is tested deterministically in
milliseconds; the fuzz harness (fuzz_harness.py) plays random scenarios on
the same transport.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from asgid.config import Config
from asgid.worker._protocol import HttpProtocol
from asgid.worker._state import ServerState
from asgid.worker._types import ASGIApp

WRITE_HIGH_WATER = 16384  # the buffer size above which the transport pauses the protocol


class HandleClosedError(RuntimeError):
    """What ``FakeTransport.write`` raises once the connection is lost (uvloop's error)."""


WRITE_MODES = ("fast", "slow", "stuck")  # how the client reads; hypothesis shrinks to "fast"
SLOW_READ = 8192  # bytes a slow client reads per loop iteration


class FakeTransport(asyncio.Transport):
    """Records what the protocol writes and calls, acting as asyncio's transports do.

    The client reads what is written at once (``writes="fast"``), 8 KiB per
    loop iteration (``"slow"``), or not at all (``"stuck"``). The buffer pauses
    the protocol above ``WRITE_HIGH_WATER`` and resumes it at a quarter of it.
    ``close()`` stops reading and loses the connection once the buffer is
    empty; ``abort()`` drops the buffer and loses it on the next iteration.
    Bytes written after ``close()`` are kept apart (a client never sees them);
    ``write`` after ``connection_lost`` raises ``HandleClosedError``, as uvloop's
    does, and ``write`` after ``write_eof()`` raises RuntimeError (a transport
    made with ``half_close=False``, like TLS, has no ``write_eof``).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: HttpProtocol,
        *,
        writes: str = "fast",
        half_close: bool = True,
    ) -> None:
        super().__init__()
        self.loop = loop
        self.protocol = protocol
        self.writes = writes
        self.half_close = half_close
        self.wire = bytearray()  # what the client receives
        self.late = bytearray()  # written after close() or abort()
        self.closing = False
        self.server_closed = False  # close(), abort() or write_eof() was called
        self.eof_written = False
        self.lost = False
        self.lost_scheduled = False
        self.reading_paused = False
        self.writing_paused = False
        self.buffered = 0
        self.client_reading = False  # a slow client's next read is scheduled
        self.closer = ""  # the function that first called close() or abort()
        self.calls: list[str] = []  # a log of what was called, for failure reports

    # writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof_written:  # asyncio and uvloop both refuse
            raise RuntimeError("Cannot call write() after write_eof()")
        if self.lost:  # as uvloop does once the handle is closed (asyncio drops the bytes)
            raise HandleClosedError("unable to perform operation on FakeTransport: it is closed")
        if self.closing:
            self.late += data
            return
        self.wire += data
        if self.writes == "fast" or not data:
            return
        self.buffered += len(data)
        if self.buffered > WRITE_HIGH_WATER and not self.writing_paused:
            self.writing_paused = True
            self.calls.append("pause_writing")
            self.protocol.pause_writing()
        if self.writes == "slow" and not self.client_reading:
            self.client_reading = True
            self.loop.call_soon(self._client_reads)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _client_reads(self) -> None:
        self.client_reading = False
        if self.lost:
            return
        self.buffered = max(0, self.buffered - SLOW_READ)
        if self.writing_paused and self.buffered <= WRITE_HIGH_WATER // 4:
            self.writing_paused = False
            self.calls.append("resume_writing")
            self.protocol.resume_writing()
        if self.buffered:
            self.client_reading = True
            self.loop.call_soon(self._client_reads)
        elif self.closing:
            self.lose(None)  # close() waited for the buffer to empty

    def can_write_eof(self) -> bool:
        return self.half_close

    def write_eof(self) -> None:
        self.calls.append("write_eof")
        if not self.half_close:
            raise NotImplementedError("a TLS transport cannot write EOF")
        self.eof_written = self.server_closed = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (WRITE_HIGH_WATER // 4, WRITE_HIGH_WATER)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    # reading

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")
        self.reading_paused = False

    def is_reading(self) -> bool:
        return not self.reading_paused and not self.closing

    # closing

    def close(self) -> None:
        self.calls.append("close")
        self.closer = self.closer or sys._getframe(1).f_code.co_name
        self.server_closed = True
        if not self.closing:
            self.closing = True
            if not self.buffered:
                self.lose(None)

    def abort(self) -> None:
        self.calls.append("abort")
        self.closer = self.closer or sys._getframe(1).f_code.co_name
        self.server_closed = self.closing = True
        self.buffered = 0
        self.lose(None)

    def is_closing(self) -> bool:
        return self.closing or self.lost

    def lose(self, exc: Exception | None) -> None:
        """Deliver ``connection_lost`` once, on the next iteration, as asyncio does."""
        if not self.lost_scheduled:
            self.lost_scheduled = True
            self.loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.closing = True
        protocol = self.protocol
        del self.protocol  # as uvloop's transports do: the pair leaves no reference cycle
        protocol.connection_lost(exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.1.2.3", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


async def until_idle(loop: asyncio.AbstractEventLoop, spins: int) -> bool:
    """Let the loop run until no callback is ready (timers are not waited for);
    False if it was still busy after ``spins`` iterations."""
    ready: Any = loop._ready  # type: ignore[attr-defined]
    for _ in range(spins):
        await asyncio.sleep(0)
        if not ready:
            return True
    return False


class Connection:
    """One client connection to ``app``, served in this process.

    ``send(data)`` delivers bytes, ``eof()`` the client's FIN; both run the
    loop until nothing is ready. ``wire`` is what the client received;
    ``closed`` whether the server closed (or aborted) the connection.
    """

    def __init__(self, app: ASGIApp, config: Config | None = None, *, writes: str = "fast") -> None:
        self.loop = asyncio.new_event_loop()
        self.state = ServerState(config or Config(), app, self.loop)
        self.protocol = HttpProtocol(self.state)
        self.transport = FakeTransport(self.loop, self.protocol, writes=writes)
        self.protocol.connection_made(self.transport)
        self.settle()

    @property
    def wire(self) -> bytes:
        return bytes(self.transport.wire)

    @property
    def closed(self) -> bool:
        return self.transport.server_closed

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)
        self.settle()

    def eof(self) -> None:
        if not self.protocol.eof_received():
            self.transport.close()
        self.settle()

    def settle(self, spins: int = 1000) -> None:
        """Run the loop until no callback is ready (timers are not waited for)."""
        if not self.loop.run_until_complete(until_idle(self.loop, spins)):
            raise AssertionError(f"the loop was still busy after {spins} iterations")

    def close(self) -> None:
        """The client goes away; every task the connection started ends."""
        self.transport.lose(None)
        self.settle()
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
        self.loop.close()
