"""The application bench/faults.py serves, unchanged between servers.

``app`` is a raw ASGI 3 application:

    GET /        "ok" as text/plain (the steady load)
    GET /sleep   awaits ``asyncio.sleep(1.0)``, then answers "slept" (a request in flight)
    GET /block   calls ``time.sleep(60)`` in the event loop: the worker stops serving
                 until its server notices and kills it (the ``block`` scenario)
    WS  /ws      echoes every text or bytes message back

Every response declares its Content-Length, so all servers frame it the same way.
The lifespan protocol is handled the same way on every server.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

SLEEP_SECONDS = 1.0
BLOCK_SECONDS = 60.0

_PLAIN = b"text/plain; charset=utf-8"


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", _PLAIN), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind == "websocket":
        await _echo(scope, receive, send)
        return
    if kind != "http":
        return
    path = scope["path"]
    if path == "/":
        await _answer(send, 200, b"ok")
    elif path == "/sleep":
        await asyncio.sleep(SLEEP_SECONDS)
        await _answer(send, 200, b"slept")
    elif path == "/block":
        time.sleep(BLOCK_SECONDS)  # blocks the event loop on purpose
        await _answer(send, 200, b"unblocked")
    else:
        await _answer(send, 404, b"Not Found")
