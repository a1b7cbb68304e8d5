"""WebSocket test app: echo, subprotocols, denial, custom denial, close codes.

Paths (WebSocket):
  /deny                 close before accept (403)
  /custom-deny          401 "no entry" through websocket.http.response
  /error-before-accept  raise before accept (500)
  /error-after-accept   raise after accept (close 1011)
  /close                accept, then close with 4000 "bye"
  /scope                accept, send the scope as JSON, then echo
  /pid                  accept, send the worker's pid, then echo
  /slow                 accept, read nothing until HTTP GET /release, then count
                        binary messages and answer "count <n> <bytes>" to text "end"
  /late-echo            echo text, but wait 0.3 s before each answer and log
                        "late-echo sent" after it (whether or not send raised)
  anything else         echo text and bytes

Every ``websocket.disconnect`` the app receives is appended to the file named by
the WS_DISCONNECT_LOG environment variable as "<code> <reason>".

HTTP: GET / answers the worker's pid; GET /release releases /slow readers.
"""

import asyncio
import json
import os

_release = None  # an asyncio.Event, created on the worker's loop


def _released():
    global _release
    if _release is None:
        _release = asyncio.Event()
    return _release


def _log_line(line):
    log = os.environ.get("WS_DISCONNECT_LOG")
    if log:
        with open(log, "a") as f:
            f.write(line + "\n")


def _log_disconnect(message):
    _log_line(f"{message['code']} {message.get('reason', '')}")


def _scope_view(scope):
    return {
        "type": scope["type"],
        "asgi": scope["asgi"],
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "root_path": scope["root_path"],
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "header_types": sorted({type(x).__name__ for pair in scope["headers"] for x in pair}),
        "subprotocols": scope["subprotocols"],
        "client": list(scope["client"]) if scope["client"] else None,
        "server": list(scope["server"]) if scope["server"] else None,
        "state": dict(scope["state"]),
        "extensions": scope["extensions"],
    }


async def _slow(receive, send):
    await asyncio.wait_for(_released().wait(), 30)
    count = size = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _log_disconnect(message)
            return
        if message.get("bytes") is not None:
            count += 1
            size += len(message["bytes"])
        elif message.get("text") == "end":
            await send({"type": "websocket.send", "text": f"count {count} {size}"})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if "state" in scope:
                    scope["state"]["greeting"] = "hello from lifespan"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        if scope["path"] == "/release":
            _released().set()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
        return
    path = scope["path"][len(scope["root_path"]) :]  # route below the mount point
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
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})
        return
    if path == "/error-before-accept":
        raise RuntimeError("boom before accept")
    accept = {"type": "websocket.accept", "headers": [(b"x-test", b"yes")]}
    if scope["subprotocols"]:
        accept["subprotocol"] = scope["subprotocols"][-1]
    await send(accept)
    if path.startswith("/scope"):
        await send({"type": "websocket.send", "text": json.dumps(_scope_view(scope))})
    if path == "/pid":
        await send({"type": "websocket.send", "text": str(os.getpid())})
    if path == "/close":
        await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
        return
    if path == "/error-after-accept":
        raise RuntimeError("boom after accept")
    if path == "/slow":
        await _slow(receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _log_disconnect(message)
            return
        if path == "/late-echo":
            await asyncio.sleep(0.3)  # the peer may be gone by now: send raises
            try:
                await send({"type": "websocket.send", "text": message["text"]})
            finally:
                _log_line("late-echo sent")
            continue
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
