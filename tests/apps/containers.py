"""An app that leaves processes behind, for the PID 1 and subreaper tests.

``/pid`` answers the worker's pid; ``/spawn`` starts ``sleep 1000`` as the
worker's child and answers its pid; ``/orphan?SECONDS`` starts ``sleep`` through
a shell that exits at once (the sleep is orphaned) and answers the orphan's
pid, as this process sees it.
"""

import os
import subprocess

_children = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    arg = scope["query_string"].decode()
    if path == "/spawn":
        child = subprocess.Popen(["sleep", "1000"])
        _children.append(child)  # never waited for: the worker is killed first
        body = str(child.pid)
    elif path == "/orphan":
        script = f"sleep {arg or '1000'} >/dev/null 2>&1 & echo $!"
        body = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout.strip()
    else:
        body = str(os.getpid())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})
