"""Fixtures of the process tests: asgid servers started and stopped per test or module.

Every process runs in its own session and is stopped by process group at the
end; on a test failure the server's output is printed. The helpers they use
are in helpers.py.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from helpers import (
    APPS,
    ROOT,
    Server,
    ServerView,
    StartServer,
    base_env,
    free_port,
    running_server,
    server_view,
    write_cert,
)

# A shell without job control starts a background job (`.ci/run &`) with
# SIGINT ignored, and a process inherits that: Python then installs no ^C
# handler, and a test that stops a client with SIGINT (`ctl status --watch`)
# waits in vain. Start the processes under test as a terminal would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# -- TLS: a throwaway CA and certificates issued by it (trustme) ---------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    """``(certfile, keyfile)`` of a server certificate for 127.0.0.1 and localhost."""
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_cert(ca.issue_cert("127.0.0.1", "localhost"), certfile, keyfile)
    return certfile, keyfile
