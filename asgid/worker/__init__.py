"""One worker: the HTTP/1.1 protocol, lifespan and graceful drain."""

from ._app import AppLoadError, load_app
from ._lifespan import LifespanFailure
from ._protocol import ClientDisconnected
from ._server import Stats, Worker

__all__ = [
    "AppLoadError",
    "ClientDisconnected",
    "LifespanFailure",
    "Stats",
    "Worker",
    "load_app",
]
