"""The app behind tests/test_hostile.py: routes that hostile clients abuse.

Every line a test waits for is printed to stdout (the server log), flushed.

HTTP:
  GET /pid             the worker's pid
  POST /body           read the whole body; print "BODY <size>" or "BODY disconnect"
  GET /stream?mb=N     stream N MiB (default 50) in 64 KiB chunks; print "STREAM done"
                       or "STREAM aborted <exception name>"; with &wait, first print
                       "STREAM waiting" and wait for GET /release
  GET /release         release the requests and WebSockets that wait for it
  anything else        "ok"

WebSocket:
  /flood               accept, send 64 KiB binary messages until send fails, then
                       print "WS flood disconnect <code>" from the next receive();
                       with ?wait, first receive one message, print "WS flood waiting,
                       got <text>" and wait for GET /release
  anything else        accept, read and drop messages; print
                       "WS sink disconnect <code>" on websocket.disconnect
"""

import asyncio
import os

CHUNK = b"x" * 65536
RELEASE = asyncio.Event()  # set by GET /release; bound to the worker's loop on first use


async def released():
    """Wait (30 s at most) for GET /release."""
    await asyncio.wait_for(RELEASE.wait(), 30)


def log(line):
    print(line, flush=True)


async def respond(send, body):
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive):
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return size


def query(scope):
    return dict(p.partition("=")[::2] for p in scope["query_string"].decode().split("&") if p)


async def stream(scope, send):
    params = query(scope)
    chunks = int(params.get("mb", "50")) * 16
    if "wait" in params:
        log("STREAM waiting")
        await released()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    try:
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except Exception as exc:
        log(f"STREAM aborted {type(exc).__name__}")
        raise
    log("STREAM done")


async def http(scope, receive, send):
    path = scope["path"]
    if path == "/pid":
        await respond(send, str(os.getpid()).encode())
    elif path == "/body":
        size = await read_body(receive)
        log(f"BODY {'disconnect' if size is None else size}")
        if size is not None:
            await respond(send, str(size).encode())
    elif path == "/release":
        await respond(send, b"released")  # answered before the waiting ones go on
        RELEASE.set()
    elif path == "/stream":
        await stream(scope, send)
    else:
        await respond(send, b"ok")


async def websocket(scope, receive, send):
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    if scope["path"] == "/flood":
        if "wait" in query(scope):
            log(f"WS flood waiting, got {(await receive()).get('text')}")
            await released()
        try:
            while True:
                await send({"type": "websocket.send", "bytes": CHUNK})
        except OSError:
            pass
        while True:  # what is left in the inbox comes first
            message = await receive()
            if message["type"] == "websocket.disconnect":
                log(f"WS flood disconnect {message['code']}")
                return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            log(f"WS sink disconnect {message['code']}")
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return  # no lifespan: the default `--lifespan auto` serves the app anyway
    if scope["type"] == "http":
        await http(scope, receive, send)
    else:
        await websocket(scope, receive, send)
