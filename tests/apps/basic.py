"""A raw ASGI app with one route per behaviour the HTTP tests need."""

import asyncio
import json


async def read_body(receive):
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(send, status=200, body=b"", headers=()):
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "hello from lifespan"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/scope":
        view = {
            k: v
            for k, v in scope.items()
            if k not in ("headers", "raw_path", "query_string", "state", "extensions")
        }
        view["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        view["raw_path"] = scope["raw_path"].decode("latin-1")
        view["query_string"] = scope["query_string"].decode("latin-1")
        view["state"] = dict(scope["state"])
        view["extensions"] = sorted(scope.get("extensions", {}))
        await respond(
            send, body=json.dumps(view).encode(), headers=[(b"content-type", b"application/json")]
        )
    elif path == "/echo":
        body = await read_body(receive)
        await respond(send, body=body)
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/sleep":
        await asyncio.sleep(float(scope["query_string"] or b"1"))
        await respond(send, body=b"slept")
    elif path == "/error":
        raise RuntimeError("boom")
    elif path == "/no-response":
        return
    else:
        await respond(send, body=b"Hello, world!", headers=[(b"content-type", b"text/plain")])
