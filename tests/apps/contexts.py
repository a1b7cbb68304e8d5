"""Which event loop serves, and what a request sees of contextvars set before it.

``GET /`` answers JSON: ``loop`` (the running loop's module: ``asyncio`` or
``uvloop``) and ``seen`` (the context variable's value when the request
started); each request then sets the variable, and lifespan startup sets it
too, so a leak from either would show in the next request.
"""

import asyncio
import contextvars
import json

var = contextvars.ContextVar("var", default="unset")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                var.set("set by lifespan startup")
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    seen = var.get()
    var.set("set by an earlier request")
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    body = json.dumps({"loop": loop, "seen": seen}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
