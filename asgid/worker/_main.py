"""The forked worker process: set it up, serve, report to the master, exit.

``worker_main`` runs in the child right after ``fork()`` and never returns.
It reads the TLS certificate and key (so a reload picks up renewed ones, and
a key only root can read still works), drops privileges, imports the
application (so a reload picks up new code, and the app never runs as root),
then runs a ``Worker`` on a fresh uvloop. The event loop (not a thread) sends
the heartbeats, so they stop when the loop is blocked. The worker stops
gracefully when the master sends ``drain`` on the channel, quickly on
SIGQUIT, and by itself when the master's
end of the channel closes.
"""

from __future__ import annotations

import faulthandler
import gc
import importlib
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

import setproctitle

from .. import _logging
from .. import _wire as wire
from .._exceptions import AppLoadError, LifespanFailure
from .._privileges import drop_privileges
from .._tls import make_ssl_context
from ..config import Config, ConfigError
from ._types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    import ssl

    from ._server import Stats

logger = logging.getLogger("asgid.error")

MAX_UNSENT = 1 << 16  # heartbeats are dropped while this much waits for a stuck master

Report = Callable[..., bool]
"""``report(kind, **data)``: send a message to the master; False once it is gone."""


# The worker's whole stack but the application: the event loop, the parser,
# the HTTP and WebSocket protocols (which import websockets).
PRELOAD = ("asyncio", "uvloop", "httptools", "asgid.worker._server", "asgid.worker._app")


def preload() -> None:
    """Import what every worker runs, in the master, before the first fork.

    The modules' pages are then shared by the master and all workers rather
    than copied into each, and each boot (after a reload, a recycle, a
    crash) is faster. The application is not preloaded: a reload must
    import it afresh. bench/memory.py measures what this saves.
    """
    for name in PRELOAD:
        importlib.import_module(name)
    # Objects the master has now are never collected again: the workers' cycle
    # collector then does not write to (and so copy) the pages holding them.
    gc.collect()
    gc.freeze()


def worker_main(
    *,
    slot: int,
    config: Config,
    sockets: list[socket.socket],
    channel: socket.socket,
    logging_changed: bool = False,
) -> NoReturn:
    """Serve ``config`` (the master's, or a pending reload's) until told to stop.

    ``logging_changed``: the config's logging differs from the master's (a
    reload not committed yet), so the worker sets up its own.
    """
    code = wire.WorkerExit.CRASHED
    try:
        code = _run(slot, config, sockets, channel, logging_changed)
    except BaseException:
        logger.exception("worker %d crashed", slot)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _run(
    slot: int,
    config: Config,
    sockets: list[socket.socket],
    channel: socket.socket,
    logging_changed: bool,
) -> wire.WorkerExit:
    # Imported here, not at the top: the master imports this module to fork,
    # and it loads the stack only through preload() (asgid.run() with one
    # worker never needs it at all).
    from ._app import load_app
    from ._server import run_loop

    signal.set_wakeup_fd(-1)
    # The master decides when a worker stops: a SIGTERM sent to every process
    # (systemd, docker) or a terminal's ^C is for it, and it drains us. Caught
    # and dropped rather than ignored, so the app's subprocesses start with
    # the default actions (an ignored signal stays ignored across exec).
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, _leave_to_the_master)
    for signum in (signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)  # a background group may still use the terminal
    for signum in (signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())  # the master blocked them across fork()
    faulthandler.enable(file=sys.stderr, all_threads=True)  # SIGABRT from the master dumps stacks
    _logging.set_role(f"worker {slot}")
    setproctitle.setproctitle(f"asgid: worker {slot} [{config.app.target}]")
    channel.setblocking(False)

    unsent = bytearray()  # whole frames only: a partial send must not split one

    def report(kind: wire.Kind, **data: object) -> bool:
        if kind != wire.Kind.HEARTBEAT or len(unsent) < MAX_UNSENT:
            unsent.extend(wire.encode(kind, **data))
        try:
            del unsent[: channel.send(unsent)]
        except BlockingIOError:
            pass  # the master is behind; the rest goes with the next report
        except OSError:
            return False
        return True

    def boot_failed(
        message: str, code: wire.WorkerExit = wire.WorkerExit.BOOT_FAILED
    ) -> wire.WorkerExit:
        report(wire.Kind.BOOT_FAILED, code=code, message=message)
        return code

    if logging_changed:
        try:
            _logging.configure(config.logging)
        except ConfigError as exc:
            return boot_failed(str(exc))

    # Before dropping privileges: the key may be readable by root only.
    try:
        ssl_context = make_ssl_context(config.server, http2=config.http.http2)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return boot_failed(f"TLS: {exc}")
    try:
        drop_privileges(config.process)
    except (OSError, ConfigError) as exc:
        return boot_failed(f"cannot switch to [process] user/group: {exc}")

    try:
        app = load_app(config.app)
    except AppLoadError as exc:
        return boot_failed(str(exc), wire.WorkerExit.APP_LOAD_FAILED)
    try:
        run_loop(
            _serve(slot, config, app, sockets, channel, report, ssl_context), config.workers.loop
        )
    except LifespanFailure as exc:
        return boot_failed(f"application startup failed: {exc}")
    return wire.WorkerExit.OK


async def _serve(
    slot: int,
    config: Config,
    app: ASGIApp,
    sockets: list[socket.socket],
    channel: socket.socket,
    report: Report,
    ssl_context: ssl.SSLContext | None,
) -> None:
    import asyncio

    from ._server import Worker

    loop = asyncio.get_running_loop()
    limit = 0
    if config.workers.max_requests:
        limit = config.workers.max_requests + random.randint(0, config.workers.max_requests_jitter)
    master = os.getppid()
    due = False  # max_requests reached: say so on every tick until the master drains us
    worker: Worker

    def on_limit() -> None:
        nonlocal due
        due = True
        logger.info("served %d requests (max_requests); asking to be replaced", limit)
        report(wire.Kind.DUE, reason="max_requests")

    if limit:
        app = _count_requests(app, limit, on_limit)

    def on_tick(stats: Stats) -> None:
        alive = report(
            wire.Kind.HEARTBEAT,
            requests=stats.requests,
            in_progress=stats.in_progress,
            connections=stats.connections,
            websockets=stats.websockets,
            http2=stats.http2,
            lag=round(stats.loop_lag, 6),
            metrics=stats.metrics,
        )
        if not alive or os.getppid() != master:
            logger.warning("the master is gone; stopping")
            worker.stop()
        elif due:
            report(wire.Kind.DUE, reason="max_requests")  # the master ignores repeats

    decoder = wire.Decoder()

    def on_channel() -> None:
        try:
            data = channel.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(channel.fileno())
            logger.warning("the master is gone; stopping")
            worker.stop()
            return
        try:
            messages = decoder.feed(data)
        except wire.FrameError as exc:
            logger.error("garbage from the master (%s); stopping", exc)
            worker.stop()
            return
        for message in messages:
            if message.kind is wire.Kind.DRAIN:
                worker.stop(restart=bool(message.data.get("restart")))
            elif message.kind is wire.Kind.SCRAPE:
                # Every request answered before this message was read is in
                # these counts: a scrape that waits for them misses none.
                stats = worker.stats()
                if stats is not None:
                    report(
                        wire.Kind.STATS,
                        seq=message.data.get("seq", 0),
                        requests=stats.requests,
                        in_progress=stats.in_progress,
                        connections=stats.connections,
                        websockets=stats.websockets,
                        metrics=stats.metrics,
                    )

    worker = Worker(
        config,
        app,
        ssl_context=ssl_context,
        on_tick=on_tick,
    )
    loop.add_signal_handler(signal.SIGQUIT, lambda: worker.stop(force=True))
    loop.add_signal_handler(signal.SIGUSR1, _logging.reopen_files)
    loop.add_reader(channel.fileno(), on_channel)

    def ready() -> None:
        report(wire.Kind.READY)

    await worker.serve(sockets, on_ready=ready)


def _leave_to_the_master(signum: int, frame: object) -> None:
    pass


def _count_requests(app: ASGIApp, limit: int, on_limit: Callable[[], None]) -> ASGIApp:
    """``app``, calling ``on_limit`` when its ``limit``-th request or WebSocket starts.

    Counting on the tick would be too late: a busy worker serves thousands of
    requests a second, far past a ``max_requests`` of a few hundred.
    """
    count = 0

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal count
        if scope["type"] != "lifespan":
            count += 1
            if count == limit:
                on_limit()
        await app(scope, receive, send)

    return counted
