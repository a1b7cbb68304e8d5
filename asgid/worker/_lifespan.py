"""The ASGI lifespan protocol: startup before serving, shutdown after draining.

With ``lifespan = "auto"`` an app that does not speak the protocol (it raises
or returns on the lifespan scope before answering) is served anyway; with
``"on"`` that is a startup failure. ``startup.failed``, or an exception with
``"on"``, becomes a ``LifespanFailure`` carrying the app's own message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .._exceptions import LifespanFailure
from ._app import _user_traceback
from ._types import ASGIApp, Message

logger = logging.getLogger("asgid.error")


class Lifespan:
    def __init__(self, app: ASGIApp, mode: str, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self._shutdown_failure: str | None = None
        self._unsupported = False

    async def startup(self) -> None:
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self._failure is not None:
            raise LifespanFailure(self._failure)

    async def shutdown(self) -> None:
        if self._task is None or self._unsupported or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self._shutdown_failure is not None:
            logger.error("lifespan shutdown failed: %s", self._shutdown_failure)

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if self._failure is not None:
                pass  # startup.failed was sent; the app's message says why
            elif self._startup_done.is_set():
                self._shutdown_failure = f"{type(exc).__name__}: {exc}"
                logger.error("%s", _user_traceback(exc, "exception in lifespan after startup"))
            elif self.mode == "auto":
                self._unsupported = True
                logger.info("the app does not support the ASGI lifespan protocol (%r)", exc)
            else:
                self._failure = self._failure or _describe(exc)
                logger.error("%s", _user_traceback(exc, "exception in lifespan startup"))
            if not isinstance(exc, Exception):
                raise
        else:
            if not self._startup_done.is_set():
                if self.mode == "on":
                    self._failure = "the app returned from lifespan before startup completed"
                else:
                    self._unsupported = True
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self._failure = str(message.get("message") or "lifespan startup failed")
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self._shutdown_failure = str(message.get("message") or "lifespan shutdown failed")
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for a lifespan scope")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
