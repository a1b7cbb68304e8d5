"""The applications every server in bench/ serves, unchanged between servers.

``app`` is a raw ASGI 3 application:

    GET  /plaintext  "Hello, world!" as text/plain
    GET  /json       {"message": "Hello, world!"} as application/json
    POST /upload     reads the whole request body, answers its length in bytes

Every response declares its Content-Length, so all servers frame it the same way.

``starlette_app`` is a Starlette application with one route, ``GET /json``,
answering the same JSON through ``JSONResponse``; ``fastapi_app`` the same
route as a FastAPI async path operation returning a dict. Each is built on
first attribute access (module ``__getattr__``), so a server that serves the
raw ``app`` never imports a framework and its idle memory does not include it.

Both handle the lifespan protocol the same way on every server.
"""

from __future__ import annotations

import json
from typing import Any

PLAINTEXT = b"Hello, world!"
JSON_PAYLOAD = {"message": "Hello, world!"}

_PLAIN = b"text/plain; charset=utf-8"
_JSON = b"application/json"
_NOT_FOUND = b"Not Found"


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind != "http":
        return
    path = scope["path"]
    if path == "/plaintext":
        status, content_type, body = 200, _PLAIN, PLAINTEXT
    elif path == "/json":
        # Serialised per request, as an application would.
        status, content_type, body = 200, _JSON, json.dumps(JSON_PAYLOAD).encode()
    elif path == "/upload":
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        status, content_type, body = 200, _PLAIN, str(size).encode()
    else:
        status, content_type, body = 404, _PLAIN, _NOT_FOUND
    # Content-Length is declared, as frameworks do: without it a server may choose
    # chunked framing (uvicorn does), and the servers would not send the same bytes.
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _build_starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def json_route(request: Any) -> JSONResponse:
        return JSONResponse(JSON_PAYLOAD)

    return Starlette(routes=[Route("/json", json_route)])


def _build_fastapi_app() -> Any:
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/json")
    async def json_route() -> dict[str, str]:
        return JSON_PAYLOAD

    return api


_BUILDERS = {"starlette_app": _build_starlette_app, "fastapi_app": _build_fastapi_app}


def __getattr__(name: str) -> Any:
    builder = _BUILDERS.get(name)
    if builder is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = builder()
    return value
