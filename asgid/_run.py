"""Programmatic entry points, with uvicorn's names: ``Config``, ``Server``, ``run``, ``serve``.

``Config(app, **keywords)`` resolves uvicorn's keyword arguments (and
asgid's own, the CLI's long flags in snake_case) into asgid's one settings
object; ``Server(config)`` serves it: in the calling process with one
worker, or, with ``workers`` above 1 or ``reload=True``, as asgid's master,
exactly as the ``asgid`` command does. ``run(app, **keywords)`` is
``Server(Config(app, **keywords)).run()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Mapping
from typing import Any

from . import _logging
from ._limits import raise_nofile_limit
from ._sockets import bind_all
from ._tls import make_ssl_context
from .config import Config as Settings
from .config import ConfigError, _uvicorn, load_config
from .config._load import overrides_from_kwargs
from .worker._types import ASGIApp

logger = logging.getLogger("asgid.error")
EXIT_POLL_SECONDS = 0.1  # how often serve() looks at should_exit, as uvicorn does


class Config:
    """An app and its settings, built from uvicorn's (or asgid's) keyword arguments.

    ``Config("main:app", host="0.0.0.0", port=8000, workers=4,
    log_level="info")`` takes every keyword ``uvicorn.Config`` takes, plus
    asgid's settings by their CLI names (``limit_max_requests``,
    ``max_memory``, ...) and ``config_file`` (a TOML file, applied first).
    ``log_config`` is a file name, a dictConfig mapping, or None to leave
    logging alone. The resolved settings are ``settings``.
    """

    def __init__(
        self,
        app: ASGIApp | str,
        *,
        config_file: str | None = None,
        log_config: str | Mapping[str, Any] | None = "",
        **kwargs: Any,
    ) -> None:
        self.app = app
        self.config_file = config_file
        self.log_config: Mapping[str, Any] | None = None
        self.configure_logging = log_config is not None
        if isinstance(log_config, Mapping):
            self.log_config = log_config
        elif log_config:
            kwargs["log_config"] = str(log_config)
        self.warnings = _uvicorn.warnings(kwargs)
        self.overrides = overrides_from_kwargs(kwargs)
        self.overrides["app.target"] = app if isinstance(app, str) else "__main__:app"
        self.settings: Settings = load_config(config_file, self.overrides)

    @classmethod
    def from_settings(cls, app: ASGIApp | str, settings: Settings) -> Config:
        config = cls.__new__(cls)
        config.app, config.config_file, config.settings = app, None, settings
        config.log_config, config.configure_logging = None, False
        config.overrides = {"app.target": settings.app.target}
        config.warnings = []
        return config

    # uvicorn's attributes that programs read back
    @property
    def workers(self) -> int:
        return self.settings.workers.count

    @property
    def should_reload(self) -> bool:
        return self.settings.reload.enabled

    @property
    def root_path(self) -> str:
        return self.settings.app.root_path

    def __repr__(self) -> str:
        target = self.app if isinstance(self.app, str) else repr(self.app)
        binds = ", ".join(self.settings.server.bind)
        return f"Config({target}, bind=[{binds}], workers={self.workers})"

    def setup_logging(self) -> None:
        if self.configure_logging:
            _logging.configure(self.settings.logging, config=self.log_config)
        for text in self.warnings:
            logger.warning("%s", text)


class Server:
    """Serves a ``Config`` like ``uvicorn.Server``: ``run()``, ``await serve()``.

    ``should_exit = True`` starts a graceful stop (as SIGINT/SIGTERM do while
    ``serve()`` runs in the main thread); ``force_exit = True`` cuts it
    short. ``started`` is True once the listeners accept connections.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.should_exit = False
        self.force_exit = False
        self.started = False

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until stopped.

        Raises what a start raises (``ConfigError``, ``OSError``,
        ``AppLoadError``, ``BootError``, of which ``LifespanFailure`` is one).
        As a master (``workers`` > 1 or ``reload``) it is stopped by signals,
        not ``should_exit``.
        """
        config = self.config
        config.setup_logging()
        settings = config.settings
        if settings.reload.enabled or settings.workers.count != 1:
            if not isinstance(config.app, str):
                raise ConfigError(
                    "workers and reload need the app as an import string, e.g. 'main:app'",
                    source="run()",
                    key="app",
                )
            from .supervisor import Master

            Master(settings, config_path=config.config_file, overrides=config.overrides).run()
            return
        raise_nofile_limit()  # this process owns its limits, as the master does
        from .worker import run_loop

        run_loop(self.serve(sockets), settings.workers.loop)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve in the running event loop (one worker) until ``should_exit``."""
        from .worker import Worker, load_app

        config = self.config
        settings = config.settings
        app = load_app(settings.app) if isinstance(config.app, str) else config.app
        loop = asyncio.get_running_loop()
        # Before binding: a bad key leaks nothing.
        ssl_context = make_ssl_context(settings.server, http2=settings.http.http2)
        owned = sockets is None
        listeners = bind_all(settings.server) if sockets is None else sockets
        worker = Worker(settings, app, ssl_context=ssl_context)
        handled: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, self.handle_exit, signum)
                    handled.append(signum)

        async def watch_exit() -> None:
            # Plain attributes a program sets, as with uvicorn: looked at, not awaited.
            stopping = False
            while True:
                await asyncio.sleep(EXIT_POLL_SECONDS)
                if self.force_exit:
                    worker.stop(force=True)
                    return
                if self.should_exit and not stopping:
                    stopping = True
                    worker.stop()

        def started() -> None:
            self.started = True

        watcher = loop.create_task(watch_exit())
        try:
            await worker.serve(listeners, on_ready=started)
        finally:
            watcher.cancel()
            for signum in handled:
                loop.remove_signal_handler(signum)
            if owned:
                for sock in listeners:
                    sock.close()

    def handle_exit(self, signum: int) -> None:
        """A second ^C while stopping stops at once, as in uvicorn."""
        if self.should_exit and signum == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


async def serve(
    app: ASGIApp | str,
    config: Settings | Config | None = None,
    *,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve ``app`` in the running event loop until SIGINT/SIGTERM.

    ``app`` is an ASGI application or a ``module:attribute`` string; ``config``
    is asgid's settings (``load_config()``) or a ``Config``, by default the
    defaults with the app as its target.
    """
    if isinstance(config, Config):
        await Server(config).serve(sockets)
        return
    if config is None:
        target = app if isinstance(app, str) else "__main__:app"
        config = load_config(overrides={"app.target": target}, environ={})
    await Server(Config.from_settings(app, config)).serve(sockets)


def run(app: ASGIApp | str, *, config: str | None = None, **kwargs: Any) -> None:
    """Serve ``app`` like ``uvicorn.run``: in this process, or as a master.

    Keyword arguments are uvicorn's (``host``, ``port``, ``workers``,
    ``reload``, ``reload_dirs``, ``log_level``, ``log_config``, ...) and
    asgid's settings by their CLI names in snake_case
    (``limit_max_requests=1000``); ``config`` names a TOML file. With
    ``workers`` above 1 or ``reload=True`` this process becomes the master and
    forks the workers, as the ``asgid`` command does; ``app`` must then be an
    import string. Returns when the server stops; see ``Server.run`` for
    what it raises.
    """
    Server(Config(app, config_file=config, **kwargs)).run()
