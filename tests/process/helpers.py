"""What the process tests share: a running asgid, raw HTTP/1.1 clients, TLS files.

Processes start through ``harness.Process`` (its own session, output in a log
file, the whole group stopped at the end); the fixtures that start them are
in conftest.py. Imported by the tests as ``helpers``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import trustme
from harness import ROOT, Overran, Process, free_port, run, wait_until

APPS = ROOT / "tests" / "apps"

__all__ = ["APPS", "ROOT", "free_port", "wait_until"]


class Server(Process):
    """A running ``python -m asgid`` process."""

    def __init__(
        self,
        args: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log: Path,
        pass_fds: tuple[int, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            [sys.executable, "-m", "asgid", *args],
            log=log,
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
            preexec_fn=preexec_fn,
        )
        self.args = args
        self.port = 0
        self.host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_listening(
        self, port: int | None = None, host: str = "", timeout: float = 15.0
    ) -> None:
        super().wait_listening(port or self.port, host or self.host, timeout)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASGID_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("NOTIFY_SOCKET", None)
    env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_PID", None)
    env.update(extra)
    return env


StartServer = Callable[..., Server]


@contextlib.contextmanager
def running_server(
    log_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A server for a module-scoped fixture (one process shared by many tests)."""
    port = free_port()
    argv = [*args, "--host", "127.0.0.1", "--port", str(port), "--app-dir", str(APPS)]
    server = Server(argv, cwd=ROOT, env=base_env(**(env or {})), log=log_dir / "asgid.log")
    server.port = port
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


class ServerView:
    """One test's view of a shared server: ``output()`` holds only what came since."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.host, self.port, self.url = server.host, server.port, server.url
        self._offset = server.log_path.stat().st_size

    def output(self) -> str:
        with open(self.server.log_path, "rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")


@contextlib.contextmanager
def server_view(server: Server, request: pytest.FixtureRequest) -> Iterator[ServerView]:
    """Yield a ServerView; print its output if the test failed."""
    view = ServerView(server)
    yield view
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- output of the shared asgid during this test ---\n{view.output()}")


def connect(server: Server | ServerView, timeout: float = 5.0) -> RawConnection:
    return RawConnection((server.host, server.port), timeout=timeout)


def only_worker(master_pid: int, timeout: float = 10.0) -> psutil.Process:
    """The master's one worker process (``--workers 1``), once it has forked."""
    found: list[psutil.Process] = []

    def one_child() -> bool:
        found[:] = psutil.Process(master_pid).children()
        return len(found) == 1

    wait_until(one_child, timeout)
    return found[0]


# -- TLS: certificates issued by a throwaway CA (trustme) --------------------


def write_cert(cert: trustme.LeafCert, certfile: Path, keyfile: Path) -> None:
    """Write ``cert``'s chain (leaf first) and its private key as PEM files."""
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts ``ca`` (and nothing else)."""
    return ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())


# -- raw HTTP/1.1 over a socket, for tests that check exact bytes ---------------


class RawResponse:
    """One parsed response: status, ``(lower-cased name, value)`` headers, body, trailers."""

    def __init__(self, head: bytes, body: bytes, trailers: list[tuple[str, str]]) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.version, _, rest = lines[0].partition(" ")
        code, _, self.reason = rest.partition(" ")
        self.status = int(code)
        self.headers = [
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        ]
        self.head = head
        self.body = body
        self.trailers = trailers

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None


class RawConnection:
    """A blocking client socket with a deadline on every read."""

    def __init__(
        self,
        address: object,
        *,
        timeout: float = 5.0,
        family: int = socket.AF_INET,
        rcvbuf: int = 0,
    ):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:  # before connect(), so that the TCP window starts small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(address)
        except OSError:
            self.sock.close()
            raise
        self.buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _take_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                raise EOFError(f"connection closed before {marker!r}; got {self.buffer!r}")
        data, _, self.buffer = self.buffer.partition(marker)
        return data

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise EOFError(f"connection closed with {size - len(self.buffer)} bytes missing")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_response(self, *, head_request: bool = False) -> RawResponse:
        """Read one response (a ``100 Continue`` counts as one) and its whole body."""
        head = self._take_until(b"\r\n\r\n")
        response = RawResponse(head, b"", [])
        if head_request or response.status < 200 or response.status in (204, 304):
            return response
        if response.header("transfer-encoding") == "chunked":
            chunks = []
            while True:
                size = int(self._take_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    break
                chunks.append(self._take(size))
                assert self._take(2) == b"\r\n"
            trailer_block = self._take_until(b"\r\n") + b"\r\n"
            while trailer_block != b"\r\n" and not trailer_block.endswith(b"\r\n\r\n"):
                trailer_block += self._take_until(b"\r\n") + b"\r\n"
            response.trailers = RawResponse(b"HTTP/1.1 200 \r\n" + trailer_block, b"", []).headers
            response.body = b"".join(chunks)
        elif response.header("content-length") is not None:
            response.body = self._take(int(response.header("content-length") or 0))
        else:
            response.body = self.read_until_closed()
        return response

    def read_until_closed(self) -> bytes:
        """Everything up to the server's FIN (a reset counts as a close)."""
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            pass
        data, self.buffer = self.buffer, b""
        return data

    def is_closed_by_server(self) -> bool:
        """True if the server closed (EOF or reset) before the socket timeout."""
        try:
            return not self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def raw_request(server: Server, data: bytes, *, timeout: float = 5.0) -> RawResponse:
    """Send ``data`` on a fresh connection and read one response."""
    with RawConnection((server.host, server.port), timeout=timeout) as conn:
        conn.send(data)
        return conn.read_response()


# -- the conformance scripts in scripts/ ------------------------------------------


def run_suite_script(name: str, *args: str, timeout: float) -> str:
    """Run ``scripts/<name>`` in its own process group; return its output.

    Skips the test with the script's reason when it prints ``<name>: SKIP:``
    (its tool is missing), and fails it when the script fails or overruns.
    """
    try:
        result = run(
            [sys.executable, str(ROOT / "scripts" / name), *args],
            timeout=timeout,
            merge_stderr=True,
            grace=30,  # SIGTERM first: the script stops what it started
        )
    except Overran as exc:
        pytest.fail(f"scripts/{name} did not finish in {timeout:g}s:\n{exc.stdout}")
    output = result.stdout
    for line in output.splitlines():
        if line.startswith(f"{name}: SKIP: "):
            pytest.skip(line.removeprefix(f"{name}: SKIP: "))
    assert result.returncode == 0, output  # 1: a check failed; 2: the run itself broke
    print(output)  # the script's summary, shown with -rP or -s
    return output
