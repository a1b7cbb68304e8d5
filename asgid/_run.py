"""Programmatic entry points: ``asgid.run()`` and ``await asgid.serve()``."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import Any

from . import _logging
from ._limits import raise_nofile_limit
from ._sockets import bind_all, make_ssl_context
from .config import Config, ConfigError, load_config
from .config._load import overrides_from_kwargs
from .worker._types import ASGIApp


async def serve(
    app: ASGIApp | str,
    config: Config | None = None,
    *,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve ``app`` in the running event loop until SIGINT/SIGTERM.

    ``app`` is an ASGI application or a ``module:attribute`` string; ``config``
    defaults to ``Config()`` with the app as its target.
    """
    import asyncio  # here, not at import: `import asgid` stays light for the master

    from .worker import Worker, load_app

    if config is None:
        target = app if isinstance(app, str) else "__main__:app"
        config = load_config(overrides={"app.target": target}, environ={})
    if isinstance(app, str):
        app = load_app(config.app)
    loop = asyncio.get_running_loop()
    owned = sockets is None
    listeners = bind_all(config.server, reuse_port=False) if sockets is None else sockets
    worker = Worker(config, app, ssl_context=make_ssl_context(config.server))
    handled: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, worker.stop)
                handled.append(signum)
    try:
        await worker.serve(listeners)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        if owned:
            for sock in listeners:
                sock.close()


def run(app: ASGIApp | str, *, config: str | None = None, **kwargs: Any) -> None:
    """Serve ``app`` like ``uvicorn.run``: in this process, or as a master.

    Keyword arguments are the CLI's long flags in snake_case
    (``port=8001``, ``limit_concurrency=100``, ``log_level="debug"``), plus
    uvicorn's ``host``/``port``/``uds``/``fd`` and ``reload_dirs``-style
    names; ``config`` names a TOML file. With ``workers`` above 1 or
    ``reload=True`` this process becomes the master and forks the workers,
    as the ``asgid`` command does; ``app`` must then be an import string.
    Returns when the server stops; raises ``SystemExit`` with the command's
    exit status if it stopped on an error.
    """
    overrides = overrides_from_kwargs(kwargs)
    overrides["app.target"] = app if isinstance(app, str) else "__main__:app"
    settings = load_config(config, overrides)
    _logging.configure(settings.logging)
    if settings.reload.enabled or settings.workers.count != 1:
        if not isinstance(app, str):
            raise ConfigError(
                "workers and reload need the app as an import string, e.g. 'main:app'",
                source="run()",
                key="app",
            )
        from .supervisor import Master

        code = Master(settings, config_path=config, overrides=overrides).run()
        if code:
            raise SystemExit(code)
        return
    raise_nofile_limit()  # this process owns its limits, as the master does
    import uvloop

    uvloop.run(serve(app, settings))
