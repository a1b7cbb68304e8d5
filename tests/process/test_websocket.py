"""WebSockets end to end: a real client against ``python -m asgid`` on 127.0.0.1.

Most tests talk to ``tests/apps/ws_echo.py`` with the ``websockets`` library's
sync client (every call has a timeout). Where the client must misbehave (never
answer pings or a close, vanish without a close frame) a raw socket speaks the
protocol by hand. Signals go to the master; close codes are checked on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import ROOT, RawConnection, Server, StartServer, wait_until
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

TIMEOUT = 5.0


def ws_url(server: Server, path: str = "/") -> str:
    return f"ws://{server.host}:{server.port}{path}"


def open_ws(server: Server, path: str = "/", **kwargs: object) -> ClientConnection:
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    return connect(ws_url(server, path), **kwargs)  # type: ignore[arg-type]


def closed_by_server(ws: ClientConnection) -> ConnectionClosed:
    """Wait (with a deadline) for the server to close ``ws``; return the exception."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            ws.recv(timeout=deadline - time.monotonic())
        except ConnectionClosed as exc:
            return exc
        except TimeoutError:
            break
    raise AssertionError("the server did not close the WebSocket")


def worker_pid(server: Server) -> int:
    return int(httpx.get(server.url + "/", timeout=TIMEOUT).text)


# -- a raw client, for peers that misbehave --------------------------------------------


def raw_handshake(server: Server, path: str = "/", extra: bytes = b"") -> RawConnection:
    conn = RawConnection((server.host, server.port), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16))
    conn.send(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )
    head = conn._take_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return conn


def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", (0x80 if fin else 0) | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", (0x80 if fin else 0) | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def read_frame(conn: RawConnection) -> tuple[int, bytes]:
    first, second = conn._take(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", conn._take(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", conn._take(8))
    assert not second & 0x80, "server frames are not masked"
    return first & 0x0F, conn._take(size)


def read_close(conn: RawConnection) -> tuple[int, str]:
    """Skip frames up to the server's close frame; return its code and reason."""
    for _ in range(100):
        opcode, payload = read_frame(conn)
        if opcode == 0x8:
            (code,) = struct.unpack("!H", payload[:2])
            return code, payload[2:].decode()
    raise AssertionError("no close frame")


def wait_closed(conn: RawConnection, deadline: float) -> None:
    """Read and drop whatever comes until the server closes TCP, before ``deadline``."""
    while time.monotonic() < deadline:
        conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not conn.sock.recv(65536):
                return
        except ConnectionResetError:
            return
        except TimeoutError:
            break
    raise AssertionError("the server kept the connection open")


@pytest.fixture
def echo(start_server: StartServer) -> Server:
    return start_server("ws_echo:app")


# -- messages --------------------------------------------------------------------------


def test_text_and_binary_echo(echo: Server) -> None:
    with open_ws(echo) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
        ws.send("héllo wörld ☃")
        assert ws.recv(timeout=TIMEOUT) == "héllo wörld ☃"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01\xff"
        ws.send(b"")
        assert ws.recv(timeout=TIMEOUT) == b""
        ws.send(["frag", "mented"])  # one message in two frames
        assert ws.recv(timeout=TIMEOUT) == "fragmented"


def test_one_mebibyte_messages(echo: Server) -> None:
    data = os.urandom(1 << 20)
    text = "x" * (1 << 20)
    with open_ws(echo, max_size=None) as ws:
        ws.send(data)
        assert ws.recv(timeout=TIMEOUT) == data
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text


def test_subprotocol_negotiation(echo: Server) -> None:
    with open_ws(echo, subprotocols=["chat.v1", "chat.v2"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v2"  # the app picks the last one offered
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "chat.v2"
        assert ws.response.headers["x-test"] == "yes"  # headers given with websocket.accept
    with open_ws(echo) as ws:
        assert ws.subprotocol is None
        assert ws.response is not None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers


# -- handshakes the app refuses --------------------------------------------------------


def test_close_before_accept_is_403(echo: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        open_ws(echo, "/deny")
    assert info.value.response.status_code == 403


def test_custom_denial_response(echo: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        open_ws(echo, "/custom-deny")
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["content-type"] == "text/plain"
    assert response.body == b"no entry"


def test_app_exception_before_accept_is_500(echo: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        open_ws(echo, "/error-before-accept")
    assert info.value.response.status_code == 500
    wait_until(lambda: "boom before accept" in echo.output())
    with open_ws(echo) as ws:  # the worker is fine
        ws.send("still here")
        assert ws.recv(timeout=TIMEOUT) == "still here"


def test_app_exception_after_accept_closes_1011(echo: Server) -> None:
    with open_ws(echo, "/error-after-accept") as ws:
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1011
    wait_until(lambda: "boom after accept" in echo.output())


def test_not_a_valid_handshake_is_refused(echo: Server) -> None:
    with RawConnection((echo.host, echo.port), timeout=TIMEOUT) as conn:
        conn.send(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"  # no Sec-WebSocket-Key
        )
        response = conn.read_response()
    assert response.status == 400


# -- closing ---------------------------------------------------------------------------


def test_client_close_code_and_reason_reach_the_app(
    start_server: StartServer, tmp_path: Path
) -> None:
    log = tmp_path / "disconnects.log"
    server = start_server("ws_echo:app", env={"WS_DISCONNECT_LOG": str(log)})
    with open_ws(server) as ws:
        ws.send("hi")
        assert ws.recv(timeout=TIMEOUT) == "hi"
        ws.close(4001, "see ya")
        assert ws.close_code == 4001  # the server echoed the close frame
    wait_until(lambda: log.exists() and log.read_text() == "4001 see ya\n")


def test_app_close_code_and_reason_reach_the_client(echo: Server) -> None:
    with open_ws(echo, "/close") as ws:
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4000, "bye")


def test_unanswered_close_is_aborted(echo: Server) -> None:
    """The app closed and returned; a peer that never answers the close is cut off."""
    with raw_handshake(echo, "/close") as conn:
        assert read_close(conn) == (4000, "bye")
        wait_closed(conn, time.monotonic() + 10)


def test_message_over_max_size_closes_1009(start_server: StartServer, tmp_path: Path) -> None:
    log = tmp_path / "disconnects.log"
    server = start_server(
        "ws_echo:app", "--ws-max-size", "1024", env={"WS_DISCONNECT_LOG": str(log)}
    )
    with open_ws(server) as ws:
        ws.send(b"x" * 1024)
        assert ws.recv(timeout=TIMEOUT) == b"x" * 1024
        ws.send(b"x" * 1025)
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1009
    with open_ws(server) as ws:  # also when the message comes in fragments
        ws.send([b"x" * 600, b"x" * 600])
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1009
    wait_until(lambda: log.exists() and log.read_text().count("\n") == 2)
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["1009", "1009"]


def test_invalid_utf8_closes_1007(start_server: StartServer, tmp_path: Path) -> None:
    log = tmp_path / "disconnects.log"
    server = start_server("ws_echo:app", env={"WS_DISCONNECT_LOG": str(log)})
    with raw_handshake(server) as conn:
        # What follows the bad message in the same read is not delivered.
        conn.send(client_frame(0x1, b"ok \xff") + client_frame(0x1, b"after"))
        assert read_close(conn)[0] == 1007
        wait_closed(conn, time.monotonic() + 5)
    with raw_handshake(server) as conn:  # fragmented: fails on the first bad fragment
        conn.send(client_frame(0x1, b"fine", fin=False))
        conn.send(client_frame(0x0, b"\xc0\xaf", fin=False))
        assert read_close(conn)[0] == 1007
    wait_until(lambda: log.exists() and log.read_text().count("\n") == 2)
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["1007", "1007"]
    assert "Traceback" not in server.output()


def test_protocol_error_closes_1002(start_server: StartServer, tmp_path: Path) -> None:
    log = tmp_path / "disconnects.log"
    server = start_server("ws_echo:app", env={"WS_DISCONNECT_LOG": str(log)})
    with raw_handshake(server) as conn:
        conn.send(client_frame(0x1, b"one"))
        assert read_frame(conn) == (0x1, b"one")
        conn.send(client_frame(0x3, b"reserved opcode"))
        assert read_close(conn)[0] == 1002
        wait_closed(conn, time.monotonic() + 5)
    wait_until(lambda: log.exists() and log.read_text().count("\n") == 1)
    assert log.read_text().split()[0] == "1002"  # the app is told why
    assert "Traceback" not in server.output()


def test_peer_that_stops_answering_pings_is_closed(start_server: StartServer) -> None:
    server = start_server("ws_echo:app", "--ws-ping-interval", "1", "--ws-ping-timeout", "1")
    with raw_handshake(server) as conn:
        start = time.monotonic()
        opcode, _ = read_frame(conn)  # the server pings an idle peer ...
        assert opcode == 0x9
        assert read_close(conn)[0] == 1011  # ... and gives up when no pong comes
        wait_closed(conn, start + 8)
        assert time.monotonic() - start < 8
    with open_ws(server) as ws:  # a client that answers pings stays connected
        time.sleep(3.5)  # past ping interval + timeout: the keepalive has had its chance
        ws.send("alive")
        assert ws.recv(timeout=TIMEOUT) == "alive"


# -- permessage-deflate ----------------------------------------------------------------


def test_per_message_deflate_is_negotiated(echo: Server) -> None:
    text = "compress me " * 10000
    with open_ws(echo, compression="deflate") as ws:
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text
        ws.send(text.encode())
        assert ws.recv(timeout=TIMEOUT) == text.encode()
        ws.send(["frag " * 100, "mented " * 100])
        assert ws.recv(timeout=TIMEOUT) == "frag " * 100 + "mented " * 100


def test_per_message_deflate_uses_small_windows(echo: Server) -> None:
    # The websockets library's recommended parameters, not zlib's defaults.
    with open_ws(echo, compression="deflate") as ws:
        assert ws.response is not None
        offer = ws.response.headers["Sec-WebSocket-Extensions"]
        assert "server_max_window_bits=12" in offer
        assert "client_max_window_bits=12" in offer


def test_per_message_deflate_windows_are_settable(start_server: StartServer) -> None:
    server = start_server("ws_echo:app", "--ws-deflate-window-bits", "10")
    with open_ws(server, compression="deflate") as ws:
        assert ws.response is not None
        assert "server_max_window_bits=10" in ws.response.headers["Sec-WebSocket-Extensions"]
        ws.send("x" * 50_000)
        assert ws.recv(timeout=TIMEOUT) == "x" * 50_000


def test_per_message_deflate_can_be_disabled(start_server: StartServer) -> None:
    server = start_server("ws_echo:app", "--no-ws-per-message-deflate")
    with open_ws(server, compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=TIMEOUT) == "plain"


# -- many connections, vanishing peers -------------------------------------------------


def test_200_concurrent_connections(echo: Server) -> None:
    async def one(i: int) -> None:
        async with aconnect(ws_url(echo), open_timeout=20, close_timeout=5) as ws:
            for j in range(5):
                await ws.send(f"{i}-{j}")
                assert await ws.recv() == f"{i}-{j}"

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 30)

    asyncio.run(main())


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_abrupt_disconnect_is_1006(start_server: StartServer, tmp_path: Path, how: str) -> None:
    log = tmp_path / "disconnects.log"
    server = start_server("ws_echo:app", env={"WS_DISCONNECT_LOG": str(log)})
    for path in ("/", "/", "/late-echo"):
        conn = raw_handshake(server, path)
        conn.send(client_frame(0x1, b"ping me"))
        assert read_frame(conn) == (0x1, b"ping me")
        conn.send(client_frame(0x1, b"and vanish"))  # the echo finds the peer gone
        if how == "rst":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sock.close()
    # /late-echo's app dies of the send error it does not catch: not worth a traceback
    wait_until(lambda: log.exists() and log.read_text().count("\n") == 4)
    assert sorted(log.read_text().splitlines()) == ["1006 "] * 2 + ["late-echo sent"] * 2
    with open_ws(server) as ws:  # the worker is fine, and has logged what it would
        ws.send("ok")
        assert ws.recv(timeout=TIMEOUT) == "ok"
    assert "Traceback" not in server.output()
    assert "ERROR" not in server.output()


# -- signals ---------------------------------------------------------------------------


def test_reload_closes_websockets_with_1012(echo: Server) -> None:
    with open_ws(echo, "/pid") as ws:
        old = int(ws.recv(timeout=TIMEOUT))
        echo.signal(signal.SIGHUP)
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1012
    wait_until(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == "zombie")
    with open_ws(echo, "/pid") as ws:
        assert int(ws.recv(timeout=TIMEOUT)) != old


def test_shutdown_closes_websockets_with_1001(echo: Server) -> None:
    with open_ws(echo) as ws:
        ws.send("hi")
        assert ws.recv(timeout=TIMEOUT) == "hi"
        echo.signal(signal.SIGTERM)
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1001
    assert echo.wait(15) == 0


def test_shutdown_does_not_wait_for_a_peer_that_ignores_the_close(echo: Server) -> None:
    """The closing handshake has its 5 s deadline while draining, not graceful_timeout."""
    with raw_handshake(echo) as conn:
        echo.signal(signal.SIGTERM)
        start = time.monotonic()
        assert read_close(conn) == (1001, "going away")
        wait_closed(conn, start + 8)  # graceful_timeout is 30 s
    assert echo.wait(10) == 0


# -- the scope -------------------------------------------------------------------------


def test_websocket_scope(start_server: StartServer) -> None:
    server = start_server("ws_echo:app", "--root-path", "/mount")
    with open_ws(
        server,
        "/scope/caf%C3%A9?a=1&b=%20",
        subprotocols=["one", "two"],  # type: ignore[list-item]
        additional_headers={"X-Custom": "value"},
    ) as ws:
        scope = json.loads(ws.recv(timeout=TIMEOUT))
        local = ws.socket.getsockname()
    assert scope["type"] == "websocket"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/mount/scope/café"  # like uvicorn: includes root_path
    assert scope["raw_path"] == "/mount/scope/caf%C3%A9"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["root_path"] == "/mount"
    assert scope["header_types"] == ["bytes"]
    headers = scope["headers"]
    assert all(name == name.lower() for name, _ in headers)
    assert ["x-custom", "value"] in headers
    assert ["upgrade", "websocket"] in headers
    assert ["sec-websocket-protocol", "one, two"] in headers
    assert scope["subprotocols"] == ["one", "two"]
    assert scope["client"] == [local[0], local[1]]
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["state"] == {"greeting": "hello from lifespan"}
    assert "websocket.http.response" in scope["extensions"]


# -- recycling and flow control --------------------------------------------------------


def test_websocket_connections_count_towards_max_requests(start_server: StartServer) -> None:
    server = start_server("ws_echo:app", "--limit-max-requests", "3")
    first = None
    deadline = time.monotonic() + 20
    for _ in range(200):
        assert time.monotonic() < deadline, "the worker was not recycled"
        try:
            with open_ws(server, "/pid") as ws:
                pid = int(ws.recv(timeout=TIMEOUT))
        except ConnectionClosed:
            continue  # reached the old worker as it drained (closed with 1012): try again
        if first is None:
            first = pid
        elif pid != first:
            break
        time.sleep(0.05)  # the worker reports its count on its once-a-second tick
    else:
        raise AssertionError("the worker was not recycled")


def test_slow_app_applies_backpressure(start_server: StartServer) -> None:
    # Keepalive on a short fuse: a peer held back by the server is not a dead peer.
    keepalive = ["--ws-ping-interval", "1", "--ws-ping-timeout", "1"]
    server = start_server("ws_echo:app", "--ws-max-queue", "4", *keepalive)
    worker = psutil.Process(worker_pid(server))
    baseline = worker.memory_info().rss
    message = b"\x00" * (1 << 20)
    total = 200  # 200 MiB if nothing pushed back

    async def main() -> tuple[int, int, str]:
        sent = 0
        async with aconnect(ws_url(server, "/slow"), compression=None, max_size=None) as ws:

            async def sender() -> None:
                nonlocal sent
                for _ in range(total):
                    await ws.send(message)
                    sent += 1
                await ws.send("end")

            task = asyncio.create_task(sender())
            start = time.monotonic()
            # The app reads nothing: the client must soon stop making progress.
            previous = -1
            for _ in range(50):
                await asyncio.sleep(0.2)
                if sent == previous:
                    break
                previous = sent
            stalled = sent
            assert stalled < total, "the server read everything a stalled app did not take"
            # ... and stay held back (past ping interval + timeout) without being closed.
            await asyncio.sleep(max(0.0, start + 3.5 - time.monotonic()))
            assert sent == stalled
            assert not task.done(), task
            rss = worker.memory_info().rss
            httpx.get(server.url + "/release", timeout=TIMEOUT)  # the app starts reading
            await asyncio.wait_for(task, 30)
            answer = await asyncio.wait_for(ws.recv(), 10)
        return stalled, rss, str(answer)

    stalled, rss, answer = asyncio.run(main())
    assert stalled < 64, f"{stalled} MiB went out before the client was held back"
    assert rss - baseline < 96 << 20, f"the worker grew by {(rss - baseline) >> 20} MiB"
    assert answer == f"count {total} {total << 20}"  # nothing lost


# -- a framework app -------------------------------------------------------------------


def test_fastapi_websocket_endpoint(start_server: StartServer) -> None:
    server = start_server("examples.fastapi_ws:app", app_dir=ROOT)
    with open_ws(server, "/ws?name=test") as ws:
        assert ws.recv(timeout=TIMEOUT) == "hello test"
        ws.send("ping")
        assert ws.recv(timeout=TIMEOUT) == "echo: ping"
        ws.send(b"\x01\x02")
        assert ws.recv(timeout=TIMEOUT) == b"\x01\x02"
        ws.send(json.dumps({"op": "close"}))
        closed = closed_by_server(ws)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4000, "bye")
    with pytest.raises(InvalidStatus) as info:
        open_ws(server, "/nowhere")
    assert info.value.response.status_code == 403
