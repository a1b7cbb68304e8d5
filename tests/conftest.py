"""Black-box helpers: start ``python -m asgid`` in its own process group.

Every process started here runs with ``start_new_session=True`` and is killed
by process group at the end of the test; every wait has a deadline; on a test
failure the server's output is printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import trustme

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


class Server:
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
        self.args = args
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asgid", *args],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=preexec_fn,
        )
        self.port = 0
        self.host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"asgid exited with {self.proc.returncode}:\n{self.output()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
            except OSError:
                return False
            return True

        wait_until(ready, timeout)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        # While the master lives, its session id is its own and cannot name anyone else's.
        members = session_members(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group
        for process in members:  # and in the workers' own groups
            with contextlib.suppress(psutil.Error):
                process.kill()  # psutil checks that the pid was not reused
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()


def session_members(sid: int) -> list[psutil.Process]:
    """The processes in session ``sid`` but its leader: a test's server and what it started.

    Each worker leads a process group of its own, so killing the master's
    group alone would leave them (and what they started) to stop by themselves.
    """
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if process.pid != sid and os.getsid(process.pid) == sid:
                members.append(process)
    return members


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASGID_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("NOTIFY_SOCKET", None)
    env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_PID", None)
    env.update(extra)
    return env


StartServer = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartServer]:
    """Start asgid; ``start_server("app:app", "--flag", ...)`` returns a listening Server.

    The app is looked up in ``tests/apps`` unless ``app_dir`` is given; pass
    ``wait=False`` to get the process before it listens (e.g. to test failures);
    ``preexec_fn`` runs in the child before asgid starts (e.g. to set rlimits).
    """
    servers: list[Server] = []

    def start(
        *args: str,
        port: int | None = None,
        wait: bool = True,
        app_dir: Path | str = APPS,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        no_bind: bool = False,
        pass_fds: tuple[int, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> Server:
        chosen = port or free_port()
        argv = list(args)
        if not no_bind:
            argv += ["--host", "127.0.0.1", "--port", str(chosen)]
        argv += ["--app-dir", str(app_dir)]
        server = Server(
            argv,
            cwd=cwd or ROOT,
            env=base_env(**(env or {})),
            log=tmp_path / f"asgid-{len(servers)}.log",
            pass_fds=pass_fds,
            preexec_fn=preexec_fn,
        )
        server.port = chosen
        servers.append(server)
        if wait:
            server.wait_listening()
        return server

    yield start
    failed = getattr(request.node, "rep_call", None)
    for server in servers:
        server.stop()
        if failed is not None and failed.failed:
            print(f"--- output of asgid {' '.join(server.args)} ---\n{server.output()}")


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


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """One ``python -m asgid httpapp:app`` shared by a whole test module."""
    log_dir = tmp_path_factory.mktemp(request.module.__name__)
    with running_server(log_dir, "httpapp:app") as server:
        yield server


@pytest.fixture
def server(shared_server: Server, request: pytest.FixtureRequest) -> Iterator[ServerView]:
    """The module's shared server; output() shows this test's lines only."""
    with server_view(shared_server, request) as view:
        yield view


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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# -- TLS: a throwaway CA and certificates issued by it (trustme) ---------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_cert(cert: trustme.LeafCert, certfile: Path, keyfile: Path) -> None:
    """Write ``cert``'s chain (leaf first) and its private key as PEM files."""
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    """``(certfile, keyfile)`` of a server certificate for 127.0.0.1 and localhost."""
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_cert(ca.issue_cert("127.0.0.1", "localhost"), certfile, keyfile)
    return certfile, keyfile


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
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script stops what it started
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate(timeout=10)
        pytest.fail(f"scripts/{name} did not finish in {timeout:g}s:\n{output}")
    for line in output.splitlines():
        if line.startswith(f"{name}: SKIP: "):
            pytest.skip(line.removeprefix(f"{name}: SKIP: "))
    assert proc.returncode == 0, output  # 1: a check failed; 2: the run itself broke
    print(output)  # the script's summary, shown with -rP or -s
    return output
