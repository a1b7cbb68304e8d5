"""A plaintext app that counts the requests each worker process served.

At lifespan shutdown each worker writes its count to ``$SPREAD_DIR/<pid>``,
so bench/listeners.py can tell how evenly the connections spread.
"""

from __future__ import annotations

import os
from typing import Any

_served = 0
_BODY = b"Hello, world!"
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
_END = {"type": "http.response.body", "body": _BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _served
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                directory = os.environ.get("SPREAD_DIR")
                if directory:
                    with open(os.path.join(directory, str(os.getpid())), "w") as f:
                        f.write(str(_served))
                await send({"type": "lifespan.shutdown.complete"})
                return
    _served += 1
    await send(_START)
    await send(_END)
