"""Hostile clients against one worker: floods, resets, half-closes, stalls.

Each test runs ``python -m asgid hostile:app --workers 1`` (``tests/apps/hostile.py``)
and finds the worker as the master's only child. After every abuse the worker must
be back where it started: its open file descriptors (``/proc/<pid>/fd``) return to
the count taken before, its RSS stays within a margin, the log holds no traceback
or asyncio complaint, and a normal request is still answered.

Many sockets at once are driven by one ``selectors`` loop, without threads. Every
wait has a deadline; every loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import os
import resource
import select
import selectors
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import trustme
from helpers import (
    RawConnection,
    Server,
    ServerView,
    StartServer,
    only_worker,
    running_server,
    server_view,
    wait_until,
)
from test_websocket import read_close

MiB = 1024 * 1024
BAD_MARKERS = ("Traceback", "Task was destroyed", "Exception in callback", "never retrieved")


# -- the worker, seen from outside ------------------------------------------------------


Target = Server | ServerView  # a server of its own, or a test's view of a shared one


def worker_process(server: Target) -> psutil.Process:
    """The master's only child (``--workers 1``), once it answers requests."""
    worker = only_worker(server.server.pid if isinstance(server, ServerView) else server.pid)
    assert request_pid(server) == worker.pid
    return worker


def fd_count(worker: psutil.Process) -> int:
    return len(os.listdir(f"/proc/{worker.pid}/fd"))


def fd_listing(worker: psutil.Process) -> list[str]:
    names = []
    for fd in os.listdir(f"/proc/{worker.pid}/fd"):
        try:
            names.append(f"{fd} -> {os.readlink(f'/proc/{worker.pid}/fd/{fd}')}")
        except OSError:
            pass
    return sorted(names)


def settled_fd_count(worker: psutil.Process, timeout: float = 5.0) -> int:
    """The worker's fd count once it has not changed for 0.3 s."""
    deadline = time.monotonic() + timeout
    last, since = fd_count(worker), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = fd_count(worker)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.3:
            return now
    raise AssertionError(f"the worker's fd count kept changing: {last}")


def assert_fds_back(worker: psutil.Process, baseline: int, timeout: float = 5.0) -> None:
    try:
        wait_until(lambda: fd_count(worker) <= baseline, timeout=timeout, interval=0.05)
    except TimeoutError:
        raise AssertionError(
            f"worker fds: {fd_count(worker)} > baseline {baseline} after {timeout}s:\n"
            + "\n".join(fd_listing(worker))
        ) from None


def rss(worker: psutil.Process) -> int:
    return int(worker.memory_info().rss)


def assert_clean(output: str) -> None:
    for marker in BAD_MARKERS:
        assert marker not in output, f"{marker!r} in the server output:\n{output}"


def assert_recovered(server: Target, worker: psutil.Process, baseline: int) -> None:
    """After the abuse: the worker's fds are back, it answers, its log is clean."""
    assert_fds_back(worker, baseline)
    assert request_pid(server) == worker.pid
    assert_clean(server.output())


def request_pid(server: Target, timeout: float = 5.0) -> int:
    """A normal request, on a fresh connection: GET /pid answers the worker's pid."""
    started = time.monotonic()
    response = httpx.get(server.url + "/pid", timeout=timeout)
    assert response.status_code == 200
    assert time.monotonic() - started < timeout
    return int(response.text)


def wait_for_line(server: Target, line: str, count: int = 1, timeout: float = 10) -> None:
    try:
        wait_until(lambda: server.output().count(line) >= count, timeout=timeout, interval=0.05)
    except TimeoutError:
        raise AssertionError(
            f"{line!r} seen {server.output().count(line)} times, not {count}:\n{server.output()}"
        ) from None


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER (1, 0): the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_until_eof(sock: socket.socket, deadline: float) -> bytes:
    """Read until the server closes (EOF or RST) before ``deadline``."""
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no EOF before the deadline; read {len(data)} bytes")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(262144)
        except ConnectionResetError:
            return bytes(data)
        except TimeoutError:
            continue
        if not chunk:
            return bytes(data)
        data += chunk


@pytest.fixture(scope="module", autouse=True)
def many_files() -> Iterator[int]:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard one (servers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- 1. a flood of idle keep-alive connections ---------------------------------------------

FLOOD = 5000
FLOOD_SILENT = 1000  # of FLOOD: connect and send nothing (the request-header timeout)
FLOOD_TIMEOUT = 4.0  # both --timeout-keep-alive and --timeout-request-header
FLOOD_BATCH = 500  # connections being set up at once
FLOOD_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class FloodClient:
    """FLOOD non-blocking sockets on one selector: connect, ask once, then idle."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.last_activity: dict[socket.socket, float] = {}
        self.buffers: dict[socket.socket, bytes] = {}
        self.closed_at: dict[socket.socket, float] = {}

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.selector.close()

    def _connect(self, silent: bool) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        self.socks.append(sock)
        err = sock.connect_ex(self.address)
        assert err in (0, 115), os.strerror(err)  # EINPROGRESS
        self.selector.register(sock, selectors.EVENT_WRITE, silent)

    def open(self, count: int, *, silent: bool, timeout: float) -> None:
        """Open ``count`` connections; unless ``silent``, each gets one full response."""
        deadline = time.monotonic() + timeout
        started = pending = 0
        while started < count or pending:
            while started < count and pending < FLOOD_BATCH:
                self._connect(silent)
                started += 1
                pending += 1
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{pending} of {count} connections still being set up"
            for key, events in self.selector.select(min(remaining, 1.0)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if events & selectors.EVENT_WRITE:
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    assert error == 0, os.strerror(error)
                    self.last_activity[sock] = time.monotonic()
                    if key.data:  # silent: connected is all it does
                        self.selector.unregister(sock)
                        pending -= 1
                    else:
                        sock.send(FLOOD_REQUEST)
                        self.buffers[sock] = b""
                        self.selector.modify(sock, selectors.EVENT_READ)
                else:
                    data = sock.recv(4096)
                    assert data, "closed before the response"
                    self.buffers[sock] += data
                    if self.buffers[sock].endswith(b"\r\n\r\nok"):
                        assert self.buffers[sock].startswith(b"HTTP/1.1 200 ")
                        self.last_activity[sock] = time.monotonic()
                        self.selector.unregister(sock)
                        pending -= 1

    def wait_all_closed(self, timeout: float) -> None:
        """Wait until the server closed every socket (EOF or RST), before ``timeout``."""
        for sock in self.socks:
            self.selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(self.closed_at) < len(self.socks):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{len(self.socks) - len(self.closed_at)} of {len(self.socks)} "
                    f"connections still open after {timeout}s"
                )
            for key, _ in self.selector.select(min(remaining, 1.0)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert not data, f"unexpected bytes on an idle connection: {data!r}"
                self.closed_at[sock] = time.monotonic()
                self.selector.unregister(sock)

    def idle_times(self) -> list[float]:
        """For each socket: seconds between its last activity and the server's close."""
        return [self.closed_at[s] - self.last_activity[s] for s in self.socks]


def test_flood_of_idle_connections_on_one_worker(start_server: StartServer, many_files: int):
    if many_files != resource.RLIM_INFINITY and many_files < FLOOD + 1000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {many_files} is too low for {FLOOD} sockets")
    server = start_server(
        "hostile:app",
        *("--workers", "1"),
        *("--timeout-keep-alive", str(FLOOD_TIMEOUT)),
        *("--timeout-request-header", str(FLOOD_TIMEOUT)),
    )
    worker = worker_process(server)
    baseline = settled_fd_count(worker)
    flood = FloodClient((server.host, server.port))
    try:
        started = time.monotonic()
        flood.open(FLOOD - FLOOD_SILENT, silent=False, timeout=30)
        flood.open(FLOOD_SILENT, silent=True, timeout=30)
        setup = time.monotonic() - started
        # All of them are held by the one worker at the same time.
        wait_until(lambda: fd_count(worker) >= baseline + FLOOD, timeout=FLOOD_TIMEOUT)
        peak = fd_count(worker)
        # Normal requests are still answered, promptly.
        latencies = []
        for _ in range(5):
            begin = time.monotonic()
            assert request_pid(server, timeout=2.0) == worker.pid
            latencies.append(time.monotonic() - begin)
        # Then the idle ones are closed by the keep-alive / request-header timeout.
        flood.wait_all_closed(timeout=FLOOD_TIMEOUT + 8 + setup)
        idle = flood.idle_times()
        assert min(idle) > FLOOD_TIMEOUT - 1, min(idle)  # not closed early
        assert max(idle) < FLOOD_TIMEOUT + 3, max(idle)
    finally:
        flood.close()
    assert_recovered(server, worker, baseline)
    print(
        f"flood: setup {setup:.2f}s, fds {baseline} -> {peak} -> {fd_count(worker)}, "
        f"latency max {max(latencies) * 1000:.0f} ms, closed after {min(idle):.2f}-{max(idle):.2f}s"
    )


# -- 2. broken peers: resets and half-closes -------------------------------------------------


@pytest.fixture(scope="module")
def peers_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("peers"),
        "hostile:app",
        *("--workers", "1"),
        *("--timeout-keep-alive", "2"),
        *("--timeout-request-header", "2"),
    ) as server:
        yield server


@pytest.fixture
def peers(peers_server: Server, request: pytest.FixtureRequest) -> Iterator[ServerView]:
    with server_view(peers_server, request) as view:
        yield view


def connect(server: Target) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=5)


def expect_continue(sock: socket.socket, head: bytes) -> None:
    """Send a head with ``Expect: 100-continue``; the 100 says the app is reading."""
    sock.sendall(head)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(1024)
        assert chunk, f"closed before 100 Continue: {answer!r}"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n"), answer


BODY_HEAD = (
    b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
)


def rst_in_head(server: ServerView) -> dict[str, int]:
    with connect(server) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Half: a header that never ends")
        reset(sock)
    return {}


def rst_in_body(server: ServerView) -> dict[str, int]:
    with connect(server) as sock:
        expect_continue(sock, BODY_HEAD)
        sock.sendall(b"b" * 1000)  # of 100000
        reset(sock)
    return {"BODY disconnect": 1}


def rst_in_stream(server: ServerView) -> dict[str, int]:
    with connect(server) as sock:
        sock.sendall(b"GET /stream?mb=50 HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while received < 256 * 1024:  # bounded: each recv returns at least a byte
            chunk = sock.recv(65536)
            assert chunk, "the stream ended early"
            received += len(chunk)
        reset(sock)
    # "STREAM aborted", or "STREAM done" when the reset lands mid-write (RESET_BUG)
    return {"STREAM ": 1}


def half_close_after_request(server: ServerView) -> dict[str, int]:
    with connect(server) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = read_until_eof(sock, time.monotonic() + 5)
        assert data.startswith(b"HTTP/1.1 200 "), data
        assert data.partition(b"\r\n\r\n")[2].isdigit(), data  # GET /pid: the worker's pid
    return {}


def half_close_during_stream(server: ServerView) -> dict[str, int]:
    # The response is still being written when the FIN arrives: it is finished anyway.
    with RawConnection((server.host, server.port), timeout=5) as conn:
        conn.send(b"GET /stream?mb=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.sock.shutdown(socket.SHUT_WR)
        response = conn.read_response()
        assert response.status == 200
        assert len(response.body) == 2 * MiB
        assert conn.read_until_closed() == b""
    return {"STREAM ": 1, "STREAM done": 1}


def half_close_in_head(server: ServerView) -> dict[str, int]:
    with connect(server) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Half: ")
        sock.shutdown(socket.SHUT_WR)
        data = read_until_eof(sock, time.monotonic() + 5)
        assert data == b"" or data.startswith(b"HTTP/1.1 400 "), data
    return {}


def half_close_in_body(server: ServerView) -> dict[str, int]:
    with connect(server) as sock:
        expect_continue(sock, BODY_HEAD)
        sock.sendall(b"b" * 1000)
        sock.shutdown(socket.SHUT_WR)
        data = read_until_eof(sock, time.monotonic() + 5)
        assert data == b"" or data.startswith(b"HTTP/1.1 400 "), data
    return {"BODY disconnect": 1}


BROKEN_PEERS: list[Callable[[ServerView], dict[str, int]]] = [
    rst_in_head,
    rst_in_body,
    rst_in_stream,
    half_close_after_request,
    half_close_during_stream,
    half_close_in_head,
    half_close_in_body,
]


@pytest.mark.parametrize("abuse", BROKEN_PEERS, ids=lambda f: f.__name__)
def test_broken_peer(peers: ServerView, abuse: Callable[[ServerView], dict[str, int]]):
    worker = worker_process(peers)
    baseline = settled_fd_count(worker)
    expected = abuse(peers)
    for line, count in expected.items():
        wait_for_line(peers, line, count)
    assert_recovered(peers, worker, baseline)
    if abuse in (rst_in_head, half_close_in_head):  # the app never saw these
        assert "BODY" not in peers.output()


ROUNDS = 200


def test_broken_peers_repeated_leak_nothing(peers: ServerView):
    worker = worker_process(peers)
    baseline = settled_fd_count(worker)
    rss_before = rss(worker)
    expected: dict[str, int] = {}
    deadline = time.monotonic() + 40
    for _ in range(ROUNDS):
        assert time.monotonic() < deadline, "too slow"
        for abuse in BROKEN_PEERS:
            for line, count in abuse(peers).items():
                expected[line] = expected.get(line, 0) + count
    for line, count in expected.items():
        wait_for_line(peers, line, count)
    assert_recovered(peers, worker, baseline)
    rss_after = rss(worker)
    assert rss_after < rss_before + 30 * MiB
    print(
        f"{ROUNDS} rounds x {len(BROKEN_PEERS)}: fds {baseline} -> {fd_count(worker)}, "
        f"rss {rss_before / MiB:.1f} -> {rss_after / MiB:.1f} MiB, {expected}"
    )


# -- 3. WebSocket peers that misbehave -----------------------------------------------------


def ws_connect(server: Target, path: str, *, rcvbuf: int = 0) -> RawConnection:
    """Open a WebSocket by hand: the opening handshake, then raw frames."""
    conn = RawConnection((server.host, server.port), timeout=5, rcvbuf=rcvbuf)
    key = base64.b64encode(os.urandom(16))
    conn.send(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = conn._take_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return conn


def ws_frame(opcode: int, payload: bytes, *, fin: bool) -> bytes:
    """A masked client frame (RFC 6455 5.2)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    mask = os.urandom(4)
    key = int.from_bytes(mask * (size // 4 + 1), "big") >> (8 * (4 - size % 4))
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big") if size else b""
    return head + mask + masked


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_ws_endless_fragmented_message_is_closed_with_1009(start_server: StartServer):
    server = start_server("hostile:app", *("--workers", "1"), *("--ws-max-size", str(MiB)))
    worker = worker_process(server)
    baseline = settled_fd_count(worker)
    rss_before = peak = rss(worker)
    fragment = b"a" * 65536
    sent = 0
    with ws_connect(server, "/sink") as conn:
        deadline = time.monotonic() + 20
        try:
            conn.send(ws_frame(0x1, fragment, fin=False))  # FIN=0: a message begins...
            sent += len(fragment)
            while sent < 50 * MiB and time.monotonic() < deadline:  # ...and never ends
                if readable(conn.sock):
                    break  # the server answered: its close frame
                conn.send(ws_frame(0x0, fragment, fin=False))
                sent += len(fragment)
                peak = max(peak, rss(worker))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_close(conn)[0] == 1009
        read_until_eof(conn.sock, time.monotonic() + 5)
    wait_for_line(server, "WS sink disconnect 1009")
    assert sent < 50 * MiB
    peak = max(peak, rss(worker))
    assert peak < rss_before + 30 * MiB
    assert_recovered(server, worker, baseline)
    print(
        f"fragmented: closed 1009 after {sent / MiB:.1f} MiB sent, "
        f"rss {rss_before / MiB:.1f} -> peak {peak / MiB:.1f} MiB, fds back to {baseline}"
    )


def test_ws_message_of_tiny_fragments_stays_within_its_max_size(start_server: StartServer):
    max_size = 512 * 1024
    server = start_server("hostile:app", *("--workers", "1"), *("--ws-max-size", str(max_size)))
    worker = worker_process(server)
    rss_before = rss(worker)
    with ws_connect(server, "/sink") as conn:
        conn.send(ws_frame(0x2, b"a", fin=False))
        batch = ws_frame(0x0, b"a", fin=False) * 8192
        deadline = time.monotonic() + 20
        try:
            for _ in range(max_size // 8192 + 8):  # a few batches past max_size
                assert time.monotonic() < deadline
                conn.send(batch)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_close(conn)[0] == 1009
    wait_for_line(server, "WS sink disconnect 1009")
    try:
        growth = rss(worker) - rss_before
    except psutil.NoSuchProcess:
        if "sent no heartbeat" not in server.output():
            raise
        pytest.skip("a loaded machine delayed the worker's heartbeat and it was replaced")
    print(f"{max_size} one-byte fragments: worker rss +{growth / MiB:.1f} MiB")
    assert growth < 2 * max_size + 8 * MiB  # parsing a backlog of frames takes a few MiB


STALL_MECHANISMS = {
    # the keepalive ping goes unanswered (it waits behind the unread data)
    "ping": ["--ws-ping-interval", "1", "--ws-ping-timeout", "1"],
    # no pings: the write timeout alone
    "timeout-write": ["--ws-ping-interval", "0", "--timeout-write", "2"],
}


@pytest.mark.parametrize("mechanism", sorted(STALL_MECHANISMS))
def test_ws_peer_that_stops_reading(start_server: StartServer, mechanism: str):
    server = start_server("hostile:app", "--workers", "1", *STALL_MECHANISMS[mechanism])
    worker = worker_process(server)
    baseline = settled_fd_count(worker)
    rss_before = peak = rss(worker)
    with ws_connect(server, "/flood", rcvbuf=4096) as conn:
        started = time.monotonic()
        # The app sends 64 KiB messages in a loop; this peer reads none of them.
        deadline = started + 20
        while "WS flood disconnect" not in server.output():
            assert time.monotonic() < deadline, "the server never gave up on the peer"
            peak = max(peak, rss(worker))
            time.sleep(0.05)
        gave_up = time.monotonic() - started
        # What the kernel buffered is still readable; then EOF or RST.
        unread = len(read_until_eof(conn.sock, time.monotonic() + 10))
    output = server.output()
    code = int(output.split("WS flood disconnect ")[1].split()[0])
    assert code in (1011, 1006), code
    assert peak < rss_before + 30 * MiB
    assert_recovered(server, worker, baseline)
    print(
        f"stalled reader ({mechanism}): gave up after {gave_up:.1f}s with code {code}, "
        f"{unread} bytes left to read, rss {rss_before / MiB:.1f} -> peak {peak / MiB:.1f} MiB"
    )


# A reset that the worker only learns of from a write: while reading is paused (a
# pipelined request waits; the WebSocket inbox holds --ws-max-queue messages) the
# reset goes unnoticed until the app sends. The same happens, by chance, when a
# reset lands while the app writes without pausing (rst_in_stream). uvloop then
# closes the transport and drops further writes without a word, and schedules
# connection_lost() for later: send() must raise, or an app sending in a loop
# would spin the worker's loop forever.


def test_reset_seen_only_by_a_write_does_not_block_the_worker(start_server: StartServer):
    server = start_server("hostile:app", "--workers", "1", "--timeout", "3")
    worker = worker_process(server)
    baseline = settled_fd_count(worker)
    with connect(server) as sock:
        sock.sendall(
            b"GET /stream?mb=1000000&wait HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"  # pipelined: reading pauses
        )
        wait_for_line(server, "STREAM waiting")
        reset(sock)
    assert httpx.get(server.url + "/release", timeout=2).text == "released"
    wait_for_line(server, "STREAM aborted", timeout=3)
    assert request_pid(server, timeout=2) == worker.pid
    assert_recovered(server, worker, baseline)


def test_ws_reset_seen_only_by_a_write_does_not_block_the_worker(start_server: StartServer):
    server = start_server("hostile:app", "--workers", "1", "--timeout", "3", "--ws-max-queue", "1")
    worker = worker_process(server)
    baseline = settled_fd_count(worker)
    with ws_connect(server, "/flood?wait") as conn:
        # The app takes the first; the second fills the inbox: reading pauses.
        conn.send(ws_frame(0x1, b"one", fin=True) + ws_frame(0x1, b"two", fin=True))
        wait_for_line(server, "WS flood waiting, got one")
        reset(conn.sock)
    assert httpx.get(server.url + "/release", timeout=2).text == "released"
    wait_for_line(server, "WS flood disconnect", timeout=3)
    assert request_pid(server, timeout=2) == worker.pid
    assert_recovered(server, worker, baseline)


# -- 4. TLS handshakes that never finish -----------------------------------------------------

HANDSHAKE_TIMEOUT = 2.0  # --timeout-request-header, which bounds the TLS handshake too
STALLED = 50  # connections of each kind


def client_hello() -> bytes:
    """The first flight of a real TLS client, taken from an in-memory handshake."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_stalled_tls_handshakes_are_closed(
    start_server: StartServer, ca: trustme.CA, tls_files: tuple[Path, Path]
):
    certfile, keyfile = tls_files
    server = start_server(
        "hostile:app",
        *("--workers", "1"),
        *("--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)),
        *("--timeout-request-header", str(HANDSHAKE_TIMEOUT)),
    )
    url = f"https://{server.host}:{server.port}/pid"
    context = ssl.create_default_context()
    ca.configure_trust(context)
    master = psutil.Process(server.pid)
    wait_until(lambda: len(master.children()) == 1, timeout=10)
    worker = master.children()[0]
    assert int(httpx.get(url, verify=context, timeout=5).text) == worker.pid
    baseline = settled_fd_count(worker)
    hello = client_hello()
    stalled = FloodClient((server.host, server.port))
    try:
        stalled.open(STALLED, silent=True, timeout=10)
        for sock in stalled.socks[:STALLED]:  # a ClientHello cut in half, never finished
            sock.send(hello[: len(hello) // 2])
        stalled.open(STALLED, silent=True, timeout=10)  # TCP only, not a byte of TLS
        opened = time.monotonic()
        wait_until(lambda: fd_count(worker) >= baseline + 2 * STALLED, timeout=5)
        # A real client is served meanwhile.
        assert int(httpx.get(url, verify=context, timeout=5).text) == worker.pid
        stalled.wait_all_closed(timeout=HANDSHAKE_TIMEOUT + 5)
        closed_after = max(stalled.closed_at.values()) - opened
        assert closed_after < HANDSHAKE_TIMEOUT + 3
    finally:
        stalled.close()
    assert_fds_back(worker, baseline)
    assert int(httpx.get(url, verify=context, timeout=5).text) == worker.pid
    assert_clean(server.output())
    print(f"stalled TLS: all {2 * STALLED} closed {closed_after:.1f}s after they opened")
