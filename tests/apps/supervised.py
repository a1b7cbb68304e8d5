"""An app for the supervisor's process tests: routes that report, block, crash or grow.

``/pid`` answers the worker's pid; ``/block`` blocks the event loop (a hung
worker); ``/slow?2`` sleeps without blocking; ``/crash`` exits the process;
``/grow?100`` keeps that many MB alive. When ``$TEST_MARKERS`` names a
directory, a worker writes ``shutdown-<pid>`` there on lifespan shutdown and
``/slow`` writes ``slow-<pid>`` when it starts sleeping.
"""

import asyncio
import os
import time

_hoard = []


async def respond(send, body, status=200):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def mark(what):
    markers = os.environ.get("TEST_MARKERS")
    if markers:
        with open(os.path.join(markers, f"{what}-{os.getpid()}"), "w") as f:
            f.write(f"{what}\n")


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            mark("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    arg = scope["query_string"].decode()
    if path == "/pid":
        await respond(send, str(os.getpid()).encode())
    elif path == "/slow":
        mark("slow")
        await asyncio.sleep(float(arg or "2"))
        await respond(send, b"slow done")
    elif path == "/block":
        time.sleep(float(arg or "60"))  # blocks the event loop: no more heartbeats
        await respond(send, b"unblocked")
    elif path == "/crash":
        os._exit(1)
    elif path == "/grow":
        _hoard.append(bytearray(int(arg or "100") * 1024 * 1024))
        for block in _hoard:  # touch every page so it counts in the RSS
            block[::4096] = b"x" * len(block[::4096])
        await respond(send, str(os.getpid()).encode())
    else:
        await respond(send, b"ok")
