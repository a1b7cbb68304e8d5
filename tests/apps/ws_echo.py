"""WebSocket test app: echo, subprotocols, denial, custom denial, close codes."""

import json
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
        return
    path = scope["path"]
    message = await receive()
    assert message["type"] == "websocket.connect"
    if path == "/deny":
        await send({"type": "websocket.close", "code": 1008})
        return
    if path == "/custom-deny":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no entry"})
        return
    if path == "/error-before-accept":
        raise RuntimeError("boom before accept")
    accept = {"type": "websocket.accept", "headers": [(b"x-test", b"yes")]}
    if scope["subprotocols"]:
        accept["subprotocol"] = scope["subprotocols"][-1]
    await send(accept)
    if path == "/scope":
        view = {k: v for k, v in scope.items() if isinstance(v, (str, int, list)) and k != "headers"}
        await send({"type": "websocket.send", "text": json.dumps(view)})
    if path == "/close":
        await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
        return
    if path == "/error-after-accept":
        raise RuntimeError("boom after accept")
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            log = os.environ.get("WS_DISCONNECT_LOG")
            if log:
                with open(log, "a") as f:
                    f.write(f"{message['code']} {message.get('reason', '')}\n")
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
