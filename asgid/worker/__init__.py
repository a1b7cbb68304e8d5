"""One worker: HTTP/1.1, HTTP/2, WebSockets, lifespan and graceful drain.

Names are imported on first use: the master imports this package's light
modules (stats, access log) without loading the event loop and parsers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._exceptions import AppLoadError, ClientDisconnected, LifespanFailure

if TYPE_CHECKING:
    from ._app import load_app
    from ._server import Stats, Worker, run_loop

__all__ = [
    "AppLoadError",
    "ClientDisconnected",
    "LifespanFailure",
    "Stats",
    "Worker",
    "load_app",
    "run_loop",
]

_LAZY = {"load_app": "._app", "Stats": "._server", "Worker": "._server", "run_loop": "._server"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
