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
from .._exceptions import AppLoadError, LifespanFailure
from .._sockets import make_ssl_context
from ..config import Config, ConfigError

if TYPE_CHECKING:
    import ssl

    from ..worker import Stats
from ..worker._types import ASGIApp, Receive, Scope, Send
from . import _messages as msg
from ._privileges import drop_privileges

logger = logging.getLogger("asgid.error")

EXIT_BOOT = 3
EXIT_APP_LOAD = 4
MAX_UNSENT = 1 << 16  # heartbeats are dropped while this much waits for a stuck master


def preload() -> None:
    """Import what every worker runs before the first fork.

    The modules' pages are then shared by all workers and each boot (after a
    reload, a recycle, a crash) is faster; the rest of the worker stack
    loads after the fork, so the master stays small.
    """
    for name in ("asyncio", "uvloop", "httptools"):
        importlib.import_module(name)


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
    code = 1
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
) -> int:
    # The event loop, parser and WebSocket stack load here, after the fork:
    # the master never runs them and stays small.
    from ..worker import load_app, run_loop

    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)  # the master decides; a terminal's ^C reaches it
    for signum in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)  # group-wide SIGTERM: the master drains us
    for signum in (signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())  # the master blocked them across fork()
    faulthandler.enable(file=sys.stderr, all_threads=True)  # SIGABRT from the master dumps stacks
    _logging.set_role(f"worker {slot}")
    setproctitle.setproctitle(f"asgid: worker {slot} [{config.app.target}]")
    channel.setblocking(False)

    unsent = bytearray()  # whole frames only: a partial send must not split one

    def report(kind: str, **data: object) -> bool:
        if kind != msg.HEARTBEAT or len(unsent) < MAX_UNSENT:
            unsent.extend(msg.encode(kind, **data))
        try:
            del unsent[: channel.send(unsent)]
        except BlockingIOError:
            pass  # the master is behind; the rest goes with the next report
        except OSError:
            return False
        return True

    def boot_failed(message: str) -> int:
        report(msg.BOOT_FAILED, code=EXIT_BOOT, message=message)
        return EXIT_BOOT

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
        report(msg.BOOT_FAILED, code=EXIT_APP_LOAD, message=str(exc))
        return EXIT_APP_LOAD
    try:
        run_loop(
            _serve(slot, config, app, sockets, channel, report, ssl_context), config.workers.loop
        )
    except LifespanFailure as exc:
        report(msg.BOOT_FAILED, code=EXIT_BOOT, message=f"application startup failed: {exc}")
        return EXIT_BOOT
    return 0


async def _serve(
    slot: int,
    config: Config,
    app: ASGIApp,
    sockets: list[socket.socket],
    channel: socket.socket,
    report: object,
    ssl_context: ssl.SSLContext | None,
) -> None:
    import asyncio

    from ..worker import Worker

    assert callable(report)
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
        report(msg.DUE, reason="max_requests")

    if limit:
        app = _count_requests(app, limit, on_limit)

    def on_tick(stats: Stats) -> None:
        alive = report(
            msg.HEARTBEAT,
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
            report(msg.DUE, reason="max_requests")  # the master ignores repeats

    decoder = msg.Decoder()

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
        except msg.FrameError as exc:
            logger.error("garbage from the master (%s); stopping", exc)
            worker.stop()
            return
        for message in messages:
            if message.type == msg.DRAIN:
                worker.stop(restart=bool(message.data.get("restart")))

    worker = Worker(
        config,
        app,
        ssl_context=ssl_context,
        on_tick=on_tick,
    )
    loop.add_signal_handler(signal.SIGQUIT, lambda: worker.stop(force=True))
    loop.add_signal_handler(signal.SIGUSR1, _logging.reopen_files)
    loop.add_reader(channel.fileno(), on_channel)
    await worker.serve(sockets, on_ready=lambda: report(msg.READY))


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
