"""One worker's server: lifespan, listeners, the tick, graceful drain.

``Worker.__init__`` runs before a fork and touches nothing process-wide; all
per-process work happens in ``serve()`` inside the worker's event loop. The
tick runs once a second on that loop: it refreshes the Date header, closes
connections past their deadline and reports stats, so a tick that does not
arrive means the loop is blocked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .._sockets import describe, shared_local_address
from ..config import Config
from ._lifespan import Lifespan
from ._protocol import HttpProtocol, local_address
from ._state import ServerState
from ._types import ASGIApp

logger = logging.getLogger("asgid.error")

TICK_SECONDS = 1.0
SWEEP_LIMIT = 10_000  # connections taken from a closing listener's queue, at most
# A TLS close first flushes what is buffered, then trades close_notify with the
# peer, reading and dropping what still arrives; past this the connection is
# dropped (asyncio's default, 30 s, would let a refused upload hold it long).
TLS_CLOSE_TIMEOUT = 10.0


T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` on a new event loop: uvloop, or asyncio's own for ``loop="asyncio"``."""
    if loop == "asyncio":
        return asyncio.run(main)
    import uvloop

    return uvloop.run(main)


@dataclass(frozen=True, slots=True)
class Stats:
    """What a worker reports on each tick."""

    requests: int
    in_progress: int
    connections: int
    websockets: int
    http2: int  # of the connections: HTTP/2 ones
    loop_lag: float
    metrics: dict[str, Any] | None  # cumulative request counts, when they are kept


class Worker:
    def __init__(
        self,
        config: Config,
        app: ASGIApp,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_tick: Callable[[Stats], None] | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.ssl_context = ssl_context
        self.on_tick = on_tick
        self.state: ServerState | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._stop: asyncio.Event | None = None
        self._force = False
        self._restart = False
        self._stop_requested = False

    # -- control (call from the worker's loop) -------------------------------

    def stop(self, *, force: bool = False, restart: bool = False) -> None:
        """Begin a graceful stop (or, with ``force``, a quick one).

        ``restart`` says a replacement takes over: WebSockets are closed with
        1012 (service restart) instead of 1001 (going away).
        """
        self._force = self._force or force
        self._restart = self._restart or restart
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    # -- running -------------------------------------------------------------

    async def serve(
        self,
        sockets: list[socket.socket],
        *,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Serve until ``stop()``; raises ``LifespanFailure`` if startup fails."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:  # asked before the loop was serving
            self._stop.set()
        state = self.state = ServerState(self.config, self.app, loop)
        state.defaults.set_date(time.time())
        lifespan = Lifespan(self.app, self.config.app.lifespan, state.lifespan_state)
        await lifespan.startup()
        for sock in sockets:
            server = await loop.create_server(
                self._protocol_factory(sock),
                sock=sock,
                backlog=self.config.server.backlog,
                **self._tls_options(),
            )
            self._servers.append(server)
            scheme = "https" if self.ssl_context is not None else "http"
            logger.info("listening on %s://%s", scheme, describe(sock))
        if on_ready is not None:
            on_ready()
        # The tick goes on while draining: its heartbeats tell the master that
        # a draining worker's loop still runs (a blocked one is killed).
        ticker = loop.create_task(self._tick())
        try:
            await self._stop.wait()
        finally:
            try:
                await self._drain()
                await lifespan.shutdown()
            finally:
                ticker.cancel()
            self._report(0.0)  # the last counts, so the master loses none

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        state = self.state
        assert state is not None
        expected = loop.time() + TICK_SECONDS
        while True:
            await asyncio.sleep(max(0.0, expected - loop.time()))
            now = loop.time()
            lag = max(0.0, now - expected)
            expected = now + TICK_SECONDS
            state.now = now
            state.defaults.set_date(time.time())
            for conn in list(state.connections):
                conn.check_deadline(now)
            for session in list(state.websockets):
                session.check(now)
            self._report(lag)

    def _report(self, lag: float) -> None:
        stats = self.stats(lag)
        if self.on_tick is not None and stats is not None:
            self.on_tick(stats)

    def stats(self, lag: float = 0.0) -> Stats | None:
        """The numbers now (None before ``serve`` starts): a tick's, or a scrape's."""
        state = self.state
        if state is None:
            return None
        return Stats(
            requests=state.requests,
            in_progress=state.in_progress,
            connections=len(state.connections),
            websockets=len(state.websockets),
            http2=state.http2_connections,
            loop_lag=lag,
            metrics=state.stats.snapshot() if state.stats is not None else None,
        )

    def _protocol_factory(self, listener: socket.socket | None) -> Callable[[], asyncio.Protocol]:
        """Protocols for ``listener``'s connections (None: each looks up its own address)."""
        state = self.state
        assert state is not None
        tls = self.ssl_context is not None
        server = None if listener is None else local_address(shared_local_address(listener))
        # An asyncio protocol by its methods, not by its base class (see HttpProtocol)
        return cast(
            "Callable[[], asyncio.Protocol]", lambda: HttpProtocol(state, tls=tls, server=server)
        )

    def _tls_options(self) -> dict[str, Any]:
        if self.ssl_context is None:
            return {}
        return {
            "ssl": self.ssl_context,
            # The protocol (and its header timeout) starts after the TLS
            # handshake: a handshake that never finishes has its own limit.
            "ssl_handshake_timeout": self.config.http.timeout_request_header,
            "ssl_shutdown_timeout": TLS_CLOSE_TIMEOUT,
        }

    def _sweep(self) -> list[socket.socket]:
        """Accept whatever waits in the listeners' queues, right before they close.

        At shutdown the last worker to close a listener closes the socket
        itself, and the kernel resets every connection still queued on it.
        Accepting them first (in the same loop step as the close, so the
        window is microseconds) serves them instead.
        """
        accepted: list[socket.socket] = []
        for server in self._servers:
            for pseudo in server.sockets:
                listener = socket.socket(fileno=os.dup(pseudo.fileno()))
                try:
                    listener.setblocking(False)
                    while len(accepted) < SWEEP_LIMIT:
                        conn, _ = listener.accept()
                        conn.setblocking(False)
                        accepted.append(conn)
                except OSError:  # BlockingIOError: the queue is empty
                    pass
                finally:
                    listener.close()
        return accepted

    async def _drain(self) -> None:
        """Stop accepting, let in-flight requests finish, close the rest."""
        state = self.state
        assert state is not None
        loop = asyncio.get_running_loop()
        leftovers = [] if self._restart else self._sweep()  # a restart's successor accepts
        for server in self._servers:
            server.close()
        state.draining = True
        adopting = [
            loop.create_task(
                loop.connect_accepted_socket(
                    self._protocol_factory(None), client, **self._tls_options()
                )
            )
            for client in leftovers
        ]
        if adopting:  # their connection_made() registers them before the wait below
            await asyncio.wait(adopting, timeout=1.0)
        # Connections the listener accepted just before it closed get their
        # connection_made() on the next loop iteration: let it run, so that the
        # wait below sees them and they are served before the final report.
        await asyncio.sleep(0)
        for conn in list(state.connections):
            conn.shutdown(restart=self._restart)
        loop = asyncio.get_running_loop()
        timeout = 0.0 if self._force else self.config.workers.graceful_timeout
        deadline = loop.time() + timeout
        while (state.connections or state.cycles) and loop.time() < deadline:
            await asyncio.sleep(0.05)
            if self._force:
                break
            now = loop.time()  # the tick has stopped: close connections past their deadline
            for conn in list(state.connections):
                conn.check_deadline(now)
        if state.cycles:
            logger.warning(
                "cancelling %d request(s) still running after %gs",
                len(state.cycles),
                timeout,
            )
            tasks = [c.task for c in state.cycles if c.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1.0)
        for conn in list(state.connections):
            conn.transport.abort()
        for server in self._servers:
            await server.wait_closed()
