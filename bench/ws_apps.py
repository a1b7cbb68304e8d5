"""The WebSocket applications bench/ws.py serves, unchanged between servers.

``app`` is a raw ASGI 3 application:

    WebSocket /echo   accepts, then sends every message back as it came (text or bytes)
    GET /             "ok" (a readiness probe)

``starlette_app`` is a Starlette application with the same WebSocket echo at
``/echo`` (``websocket.receive`` / ``send_text`` / ``send_bytes``) and the
same probe. It is built on first attribute access, so a server that serves the
raw ``app`` never imports Starlette.

With ``WS_BENCH_PROFILE=<file>`` in the environment the process that runs the
lifespan (the worker) profiles itself with cProfile from lifespan startup to
lifespan shutdown and dumps the stats to ``<file>.<pid>``: that covers the
server's event loop, protocol code and the app, which is what costs CPU per
message. ``python -m pstats`` reads the result.
"""

from __future__ import annotations

import cProfile
import os
from typing import Any

_OK = b"ok"
_PROFILER: cProfile.Profile | None = None


async def _lifespan(receive: Any, send: Any) -> None:
    global _PROFILER
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.environ.get("WS_BENCH_PROFILE"):
                _PROFILER = cProfile.Profile()
                _PROFILER.enable()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _PROFILER is not None:
                _PROFILER.disable()
                _PROFILER.dump_stats(f"{os.environ['WS_BENCH_PROFILE']}.{os.getpid()}")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http_ok(send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": _OK})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
    elif kind == "http":
        await _http_ok(send)
    elif kind == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
                else:
                    await send({"type": "websocket.send", "bytes": message.get("bytes")})
            else:  # websocket.disconnect
                return


def _build_starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def probe(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None:
                await websocket.send_text(text)
            else:
                await websocket.send_bytes(message.get("bytes") or b"")

    async def lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        else:
            await inner(scope, receive, send)

    inner = Starlette(routes=[Route("/", probe), WebSocketRoute("/echo", echo)])
    return lifespan_app


def __getattr__(name: str) -> Any:
    if name == "starlette_app":
        value = _build_starlette_app()
        globals()[name] = value
        return value
    raise AttributeError(name)
