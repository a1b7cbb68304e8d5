"""FastAPI under asgid.

    asgid examples.fastapi_app:app              # from the repository root
    asgid -c examples/fastapi.toml              # the same, with settings from a file

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

from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # Runs once per worker process, before it accepts connections.
    yield {"greeting": "Hello from FastAPI", "started_at": time.time()}
    # Runs when the worker drains (SIGTERM, a reload, or recycling).


app = FastAPI(title="asgid example", lifespan=lifespan)


@app.get("/")
async def index(request: Request) -> dict[str, Any]:
    return {
        "message": request.state.greeting,
        "pid": os.getpid(),
        "uptime": round(time.time() - request.state.started_at, 3),
    }


@app.post("/echo")
async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return {"echo": payload}
