"""asgid: a process manager with embedded ASGI workers.

``Config``, ``Server`` and ``run`` are uvicorn's programmatic API under the
same names; ``load_config`` builds asgid's settings object
(``asgid.config.Config``) from a TOML file, the environment and overrides.
"""

from ._exceptions import (
    AppLoadError,
    BootError,
    ClientDisconnected,
    LifespanFailure,
    WebSocketDisconnected,
)
from ._run import Config, Server, run, serve
from ._version import __version__
from .config import ConfigError, load_config

__all__ = [
    "AppLoadError",
    "BootError",
    "ClientDisconnected",
    "Config",
    "ConfigError",
    "LifespanFailure",
    "Server",
    "WebSocketDisconnected",
    "__version__",
    "load_config",
    "run",
    "serve",
]
