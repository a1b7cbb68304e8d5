"""An app that defines its own prometheus_client metrics, for the metrics tests.

The Counter and Histogram are created at import, in the worker, after the
master has pointed ``PROMETHEUS_MULTIPROC_DIR`` at its directory, so every
worker writes its own file and the master's /metrics sums them. ``/pid``
answers the worker's pid; ``/block`` blocks the event loop (a hung worker);
``/status?N`` answers status N. With ``$METRICS_APP_STARTUP_DELAY`` set, the
lifespan startup sleeps that many seconds before it completes.
"""

import asyncio
import os
import time

from prometheus_client import Counter, Histogram

HITS = Counter("metrics_app_hits", "Requests the app itself counted.", ["path"])
LATENCY = Histogram("metrics_app_latency_seconds", "Time the app spent per request.")


async def respond(send, body, status=200):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await asyncio.sleep(float(os.environ.get("METRICS_APP_STARTUP_DELAY") or 0))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    started = time.perf_counter()
    path = scope["path"]
    arg = scope["query_string"].decode()
    HITS.labels(path="/block" if path == "/block" else "other").inc()
    if path == "/pid":
        await respond(send, str(os.getpid()).encode())
    elif path == "/block":
        time.sleep(float(arg or "30"))  # blocks the event loop: no heartbeats
        await respond(send, b"unblocked")
    elif path == "/status":
        await respond(send, b"status", status=int(arg or "200"))
    else:
        await respond(send, b"Hello, world!")
    LATENCY.observe(time.perf_counter() - started)
