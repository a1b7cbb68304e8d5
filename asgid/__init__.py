"""asgid: a process manager with embedded ASGI workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._exceptions import AppLoadError, ClientDisconnected, LifespanFailure
from ._version import __version__
from .config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from ._run import run, serve

__all__ = [
    "AppLoadError",
    "ClientDisconnected",
    "Config",
    "ConfigError",
    "LifespanFailure",
    "__version__",
    "load_config",
    "run",
    "serve",
]


def __getattr__(name: str) -> Any:
    # run() and serve() bring the event loop; the master never needs them.
    if name in ("run", "serve"):
        from . import _run

        return getattr(_run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
