"""Starlette under asgid.

    asgid examples.starlette_app:app --workers 2

``GET /`` answers JSON, ``POST /echo`` returns the JSON body it was sent, and
the lifespan puts a greeting and a start time into the ASGI lifespan state,
which every request sees as ``request.state``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "Hello from Starlette", "started_at": time.time()}


async def index(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "message": request.state.greeting,
            "pid": os.getpid(),
            "uptime": round(time.time() - request.state.started_at, 3),
        }
    )


async def echo(request: Request) -> JSONResponse:
    try:
        payload = await request.json()
    except ValueError:
        return JSONResponse({"error": "expected a JSON body"}, status_code=400)
    return JSONResponse({"echo": payload})


app = Starlette(
    routes=[Route("/", index), Route("/echo", echo, methods=["POST"])],
    lifespan=lifespan,
)
