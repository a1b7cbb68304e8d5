"""A raw ASGI app for the HTTP tests: one route per behaviour, every call logged.

Each HTTP call prints ``CALL <method> <path>`` to stdout (the server log), so a
test can check that a malformed request never reached the application. Other
events the tests wait for are printed as ``EVENT ...`` lines.
"""

import asyncio
import json
import os
import sys


def log(line):
    print(line, flush=True)


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


def query(scope):
    """The query string as a dict (no percent-decoding: the tests keep it simple)."""
    text = scope["query_string"].decode("latin-1")
    return dict(part.partition("=")[::2] for part in text.split("&") if part)


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["greeting"] = "hello from lifespan"
            scope["state"]["shared"] = {"from": "lifespan"}
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            marker = os.environ.get("SHUTDOWN_MARKER")
            if marker:
                with open(marker, "w") as f:
                    f.write("shutdown complete")
            await send({"type": "lifespan.shutdown.complete"})
            return


def scope_view(scope):
    view = {
        k: v
        for k, v in scope.items()
        if k not in ("headers", "raw_path", "query_string", "state", "extensions")
    }
    view["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    view["header_types"] = sorted(
        {type(k).__name__ + "/" + type(v).__name__ for k, v in scope["headers"]}
    )
    view["raw_path"] = scope["raw_path"].decode("latin-1")
    view["raw_path_type"] = type(scope["raw_path"]).__name__
    view["query_string"] = scope["query_string"].decode("latin-1")
    view["query_string_type"] = type(scope["query_string"]).__name__
    view["state"] = dict(scope["state"])
    view["extensions"] = sorted(scope.get("extensions") or {})
    return view


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    assert scope["type"] == "http"
    shown = scope["path"].replace("\r", "\\r").replace("\n", "\\n")
    log(f"CALL {scope['method']} {shown}")
    path = scope["path"]
    root_path = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]  # route on the path below the mount point
    args = query(scope)
    handler = ROUTES.get(path)
    if handler is None and path.startswith("/scope"):
        handler = r_scope
    ended = "returned"
    try:
        if handler is None:
            await respond(send, body=b"Hello, world!", headers=[(b"content-type", b"text/plain")])
        else:
            await handler(scope, receive, send, args)
    except BaseException as exc:
        ended = type(exc).__name__
        raise
    finally:
        log(f"END {scope['method']} {shown} ({ended})")  # a sync point: the call is over


# -- routes -------------------------------------------------------------------


async def r_scope(scope, receive, send, args):
    if "mutate" in args:
        scope["state"]["greeting"] = "changed by a request"
        scope["state"]["added"] = True
        scope["state"]["shared"]["mutated"] = True
    body = json.dumps(scope_view(scope)).encode()
    await respond(send, body=body, headers=[(b"content-type", b"application/json")])


async def r_echo(scope, receive, send, args):
    messages = []
    chunks = []
    while True:
        message = await receive()
        messages.append(message["type"])
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    await respond(send, body=body, headers=[(b"x-messages", str(len(messages)).encode())])


async def r_headers_after_body(scope, receive, send, args):
    """Read the whole body, then answer the scope's headers as JSON."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            break
    body = json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]])
    await respond(send, body=body.encode(), headers=[(b"content-type", b"application/json")])


async def r_slow_read(scope, receive, send, args):
    """Wait ``hold`` seconds before reading anything, then read it all."""
    log("EVENT slow-read started")
    await asyncio.sleep(float(args.get("hold", "1")))
    log("EVENT slow-read reading")
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await respond(send, body=str(total).encode())


async def r_expect(scope, receive, send, args):
    """Wait until told (``wait`` seconds), then read the body and echo its size."""
    log("EVENT expect started")
    await asyncio.sleep(float(args.get("wait", "0")))
    log("EVENT expect receive")
    body = await read_body(receive)
    await respond(send, body=b"got %d" % len(body))


async def r_no_read(scope, receive, send, args):
    await respond(send, status=int(args.get("status", "200")), body=b"not reading")


async def r_stream(scope, receive, send, args):
    headers = []
    if "length" in args:
        headers.append((b"content-length", args["length"].encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(int(args.get("n", "5"))):
        await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def r_produce(scope, receive, send, args):
    """Stream ``mb`` MiB as fast as send() allows, logging progress every 4 MiB."""
    total = int(args.get("mb", "64")) * 1024 * 1024
    block = b"p" * 65536
    await send({"type": "http.response.start", "status": 200, "headers": []})
    sent = 0
    while sent < total:
        await send({"type": "http.response.body", "body": block, "more_body": True})
        sent += len(block)
        if sent % (4 * 1024 * 1024) == 0:
            log(f"EVENT produced {sent // (1024 * 1024)} MiB")
    await send({"type": "http.response.body", "body": b""})


async def r_status(scope, receive, send, args):
    status = int(args.get("code", "200"))
    await respond(send, status=status, body=args.get("body", "").encode())


async def r_stream_status(scope, receive, send, args):
    status = int(args.get("code", "200"))
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"part1", "more_body": True})
    await send({"type": "http.response.body", "body": b"part2"})


async def r_headers(scope, receive, send, args):
    """Respond with the headers given as ``name=value`` query pairs."""
    headers = [(k.encode(), v.replace("+", " ").encode()) for k, v in args.items()]
    await respond(send, body=b"ok", headers=headers)


async def r_sleep(scope, receive, send, args):
    await asyncio.sleep(float(args.get("s", "1")))
    await respond(send, body=b"slept")


async def r_wait_disconnect(scope, receive, send, args):
    """Read the body, then wait for http.disconnect without responding."""
    log("EVENT waiting for disconnect")
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            log("EVENT got http.disconnect")
            return
        if "more_body" in message and not message["more_body"]:
            log("EVENT body complete")


async def r_after_response(scope, receive, send, args):
    await read_body(receive)
    await respond(send, body=b"done")
    message = await asyncio.wait_for(receive(), 5)
    log(f"EVENT after response: {message['type']}")


async def r_send_after_disconnect(scope, receive, send, args):
    """Wait for the client to go away, then keep sending (must not trace back)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    for _ in range(200):
        await asyncio.sleep(0.02)
        await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def r_error(scope, receive, send, args):
    raise RuntimeError("boom before start")


async def r_error_after_start(scope, receive, send, args):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("boom after start")


async def r_error_after_head(scope, receive, send, args):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(0.05)
    raise RuntimeError("boom after head")


async def r_no_response(scope, receive, send, args):
    return


async def r_incomplete(scope, receive, send, args):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})


INVALID = {
    "body-first": [{"type": "http.response.body", "body": b"x"}],
    "double-start": [
        {"type": "http.response.start", "status": 200, "headers": []},
        {"type": "http.response.start", "status": 200, "headers": []},
    ],
    "str-body": [
        {"type": "http.response.start", "status": 200, "headers": []},
        {"type": "http.response.body", "body": "text"},
    ],
    "str-status": [{"type": "http.response.start", "status": "200", "headers": []}],
    "bad-status": [{"type": "http.response.start", "status": 99, "headers": []}],
    "str-header": [{"type": "http.response.start", "status": 200, "headers": [("x-a", "b")]}],
    "header-crlf": [
        {"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"b\r\nx-b: c")]}
    ],
    "unknown-type": [{"type": "http.response.bogus"}],
    "body-after-end": [
        {"type": "http.response.start", "status": 200, "headers": []},
        {"type": "http.response.body", "body": b"done"},
        {"type": "http.response.body", "body": b"again"},
    ],
    "bad-length": [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"abc")]}
    ],
    "too-long": [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]},
        {"type": "http.response.body", "body": b"four"},
    ],
}


async def r_invalid(scope, receive, send, args):
    for message in INVALID[args["kind"]]:
        await send(message)


async def r_pathsend(scope, receive, send, args):
    path = os.environ["PATHSEND_FILE"]
    assert "http.response.pathsend" in scope["extensions"]
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"x-kind", b"pathsend")]}
    )
    await send({"type": "http.response.pathsend", "path": path})


async def r_trailers(scope, receive, send, args):
    allowed = "http.response.trailers" in scope["extensions"]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"trailer", b"x-checksum")],
            "trailers": allowed,
        }
    )
    await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
    await send({"type": "http.response.body", "body": b"world", "more_body": False})
    if allowed:
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-checksum", b"abc123")],
                "more_trailers": False,
            }
        )


BARRIER = {"waiting": 0, "event": None}


async def r_barrier(scope, receive, send, args):
    """Answer once ``n`` requests are in progress at the same time (503 after 10 s)."""
    if BARRIER["event"] is None or BARRIER["event"].is_set():
        BARRIER["event"], BARRIER["waiting"] = asyncio.Event(), 0
    event = BARRIER["event"]
    BARRIER["waiting"] += 1
    if BARRIER["waiting"] >= int(args.get("n", "2")):
        event.set()
    try:
        await asyncio.wait_for(event.wait(), 10)
    except asyncio.TimeoutError:
        await respond(send, status=503, body=b"barrier not reached")
        return
    await respond(send, body=b"together")


async def r_log_stderr(scope, receive, send, args):
    print("app stderr line", file=sys.stderr, flush=True)
    await respond(send, body=b"ok")


ROUTES = {
    "/scope": r_scope,
    "/echo": r_echo,
    "/headers-after-body": r_headers_after_body,
    "/slow-read": r_slow_read,
    "/expect": r_expect,
    "/no-read": r_no_read,
    "/stream": r_stream,
    "/status": r_status,
    "/produce": r_produce,
    "/stream-status": r_stream_status,
    "/headers": r_headers,
    "/sleep": r_sleep,
    "/wait-disconnect": r_wait_disconnect,
    "/after-response": r_after_response,
    "/send-after-disconnect": r_send_after_disconnect,
    "/error": r_error,
    "/error-after-start": r_error_after_start,
    "/error-after-head": r_error_after_head,
    "/no-response": r_no_response,
    "/incomplete": r_incomplete,
    "/invalid": r_invalid,
    "/pathsend": r_pathsend,
    "/trailers": r_trailers,
    "/log-stderr": r_log_stderr,
    "/barrier": r_barrier,
}
