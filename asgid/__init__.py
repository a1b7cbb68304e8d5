"""asgid: a process manager with embedded ASGI workers."""

from ._run import run, serve
from ._version import __version__
from .config import Config, ConfigError, load_config
from .worker import AppLoadError, ClientDisconnected, LifespanFailure

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
