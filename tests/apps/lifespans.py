"""Apps with every kind of lifespan behaviour, for tests/test_lifespan.py."""

import os


def log(line):
    print(line, flush=True)


async def hello(send, text=b"hello"):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": text})


async def startup_failed(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await hello(send)


async def startup_raises(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("cannot start: settings missing")
    await hello(send)


async def no_lifespan(scope, receive, send):
    """An app that only speaks HTTP: it rejects the lifespan scope."""
    assert scope["type"] == "http", f"unsupported scope {scope['type']}"
    await hello(send)


async def returns_early(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await hello(send)


async def tracked(scope, receive, send):
    """Logs each lifespan event; sets state; writes SHUTDOWN_MARKER on shutdown."""
    if scope["type"] == "lifespan":
        log("LIFESPAN scope")
        while True:
            message = await receive()
            log(f"LIFESPAN {message['type']}")
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                scope["state"]["counter"] = [0]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                marker = os.environ.get("SHUTDOWN_MARKER")
                if marker:
                    with open(marker, "w") as f:
                        f.write("clean shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    state = scope.get("state", {})
    if "counter" in state:
        state["counter"][0] += 1
    text = f"db={state.get('db')} counter={state.get('counter')}"
    await hello(send, text.encode())


async def shutdown_failed(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "could not flush the queue"})
        return
    await hello(send)


async def slow_startup(scope, receive, send):
    """Startup takes a while: nothing is served until it completes."""
    import asyncio

    if scope["type"] == "lifespan":
        await receive()
        await asyncio.sleep(1)
        log("LIFESPAN startup done")
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await hello(send)
