"""The exceptions asgid raises at its users.

    Exception
     +-- ConfigError            a setting is wrong (asgid.config)
     +-- AppLoadError           the application could not be imported or built
     +-- LifespanFailure        the application's lifespan startup failed
    OSError
     +-- ClientDisconnected     ``send`` after the HTTP client went away (ASGI 2.4)

This module imports nothing, so the master can catch these without loading
the worker's event loop, parser and WebSocket stack.
"""


class AppLoadError(Exception):
    """The application could not be imported or built."""


class LifespanFailure(Exception):
    """Lifespan startup failed; the worker must not serve."""


class ClientDisconnected(OSError):
    """Raised by ``send`` once the client has gone (ASGI HTTP spec 2.4)."""
