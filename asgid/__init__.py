"""asgid: a process manager with embedded ASGI workers."""

from ._exceptions import AppLoadError, ClientDisconnected, LifespanFailure
from ._run import run, serve
from ._version import __version__
from .config import Config, ConfigError, load_config

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
