"""An app that reports what configuration reached it, for the CLI and config tests.

``/`` answers JSON with the ASGI ``root_path``, the lifespan state and every
environment variable whose name starts with ``CFG_``; ``/echo`` echoes the body.
"""

import json
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"][len(scope["root_path"]) :] != "/echo":
        report = {
            "root_path": scope["root_path"],
            "state": dict(scope.get("state", {})),
            "env": {k: v for k, v in os.environ.items() if k.startswith("CFG_")},
        }
        body = json.dumps(report).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app():
    """For ``--factory``."""
    return app
