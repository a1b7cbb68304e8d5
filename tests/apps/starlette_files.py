"""Starlette's FileResponse, which uses the http.response.pathsend extension."""

import os

from starlette.responses import FileResponse


async def app(scope, receive, send):
    if scope["type"] != "http":
        return

    async def logging_send(message):
        print(f"EVENT sent {message['type']}", flush=True)
        await send(message)

    response = FileResponse(os.environ["PATHSEND_FILE"], media_type="application/octet-stream")
    await response(scope, receive, logging_send)
