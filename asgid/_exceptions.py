"""The exceptions asgid raises at its users.

    Exception
     +-- ConfigError            a setting is wrong (asgid.config)
     +-- AppLoadError           the application could not be imported or built
     +-- BootError              a worker could not start serving (TLS files,
     |    |                     user switch, logging; its message says which)
     |    +-- LifespanFailure   the application's lifespan startup failed
     +-- ControlError           ``asgid ctl``: the master could not be reached, or
                                refused or failed a command (``kind`` says how)
    OSError
     +-- ClientDisconnected     ``send`` after the HTTP client went away (ASGI 2.4)
     +-- WebSocketDisconnected  ``send`` on a closed WebSocket, or after the
                                client went away (ASGI WebSocket spec 2.4)

This module imports nothing, so the master can catch these without loading
the worker's event loop, parser and WebSocket stack.
"""


class AppLoadError(Exception):
    """The application could not be imported or built."""


class BootError(Exception):
    """A worker could not start serving; the message says why."""


class LifespanFailure(BootError):
    """Lifespan startup failed; the worker must not serve."""


class ControlError(Exception):
    """``asgid ctl`` failed; ``kind`` is the control protocol's: ``config``,
    ``app_load``, ``boot``, ``bad_request``, ``refused``, ``timeout``,
    ``stopping``, ``unreachable`` or ``error``."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class ClientDisconnected(OSError):
    """Raised by ``send`` once the client has gone (ASGI HTTP spec 2.4)."""


class WebSocketDisconnected(OSError):
    """Raised by ``send`` on a WebSocket that is closed or whose client has gone."""
