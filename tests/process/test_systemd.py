"""systemd integration: sd_notify, the watchdog, socket activation, the unit files.

The protocol helpers of ``asgid.supervisor._systemd`` are tested in this
process; the rest starts real masters with ``NOTIFY_SOCKET`` pointing at a
datagram socket the test owns (a path in ``tmp_path`` and an abstract name),
or with a listening socket passed as fd 3 the way systemd passes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import APPS, ROOT, RawConnection, StartServer, base_env, wait_until

from asgid.supervisor._systemd import Notifier, listen_fds

APP = "supervised:app"
FAST = ("--timeout-graceful-shutdown", "5", "--timeout", "5", "--no-access-log")
UNITS = ROOT / "systemd"


# -- the protocol helpers, in this process ------------------------------------------------


def test_listen_fds_takes_the_fds_meant_for_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_FDNAMES", "http:https")
    assert listen_fds() == [3, 4]
    # Unset, so that the workers (and anything they start) do not take them too.
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        assert name not in os.environ


@pytest.mark.parametrize(
    ("pid", "fds"), [("1", "1"), ("", "1"), ("abc", "1"), ("{pid}", "x"), ("{pid}", "0")]
)
def test_listen_fds_ignores_fds_meant_for_others(
    monkeypatch: pytest.MonkeyPatch, pid: str, fds: str
) -> None:
    monkeypatch.setenv("LISTEN_PID", pid.format(pid=os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", fds)
    assert listen_fds() == []
    assert "LISTEN_FDS" not in os.environ


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[dict[str, str]] = []

    def close(self) -> None:
        self.sock.close()

    def receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.messages.append(fields)
        return fields

    def wait_for(self, key: str, timeout: float = 15.0) -> dict[str, str]:
        """The next message carrying ``key``; earlier ones stay in ``messages``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and key in message:
                return message
        raise AssertionError(f"no {key} within {timeout}s; got {self.messages}")


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@asgid-test-{uuid.uuid4().hex}"
    result = Listener(address)
    yield result
    result.close()


def test_notifier_sends_each_state(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    notifier = Notifier(listener.address)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready("2/2 workers ready")
    notifier.reloading("reloading")
    notifier.stopping("stopping")
    notifier.watchdog()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    ready, reloading, stopping, watchdog = (listener.receive(1) for _ in range(4))
    assert ready == {"READY": "1", "STATUS": "2/2 workers ready", "MAINPID": str(os.getpid())}
    assert reloading is not None
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
    assert watchdog == {"WATCHDOG": "1"}
    assert notifier.watchdog_interval == 0.0
    notifier.close()
    notifier.ready("after close")  # does nothing, raises nothing
    assert listener.receive(0.1) is None


@pytest.mark.parametrize("address", ["", "relative/path", "vsock:2:1"])
def test_notifier_without_a_usable_socket_does_nothing(address: str) -> None:
    notifier = Notifier(address)
    notifier.ready("ready")  # no socket to send on: nothing happens
    notifier.close()


def test_notifier_survives_systemd_going_away(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"))
    notifier.ready("ready")  # ENOENT is swallowed
    notifier.close()


@pytest.mark.parametrize(
    ("usec", "pid", "interval"),
    [("2000000", "", 1.0), ("2000000", "{pid}", 1.0), ("2000000", "1", 0.0), ("x", "", 0.0)],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    monkeypatch: pytest.MonkeyPatch, usec: str, pid: str, interval: float
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.setenv("WATCHDOG_PID", pid.format(pid=os.getpid()))
    assert Notifier("").watchdog_interval == interval


# -- a real master with NOTIFY_SOCKET -------------------------------------------------------


def _pid(port: int) -> int:
    """The pid of the worker that answers a request on a new connection."""
    with RawConnection(("127.0.0.1", port)) as conn:
        conn.send(b"GET /pid HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200, response.head
    return int(response.body)


def _workers(pid: int) -> set[int]:
    return {c.pid for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE}


def test_notify_ready_reloading_stopping(start_server: StartServer, listener: Listener) -> None:
    server = start_server(
        APP, "--workers", "2", *FAST, wait=False, env={"NOTIFY_SOCKET": listener.address}
    )
    ready = listener.wait_for("READY")
    # READY=1 means served: no waiting for the port here.
    first = {_pid(server.port) for _ in range(50)}
    assert first == _workers(server.pid)
    assert len(first) == 2
    assert ready["MAINPID"] == str(server.pid)
    assert ready["STATUS"].startswith("2/2 workers ready")
    assert [m for m in listener.messages if "READY" in m] == [ready]

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    server.signal(signal.SIGHUP)
    reloading = listener.wait_for("RELOADING")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert "READY" not in reloading
    reloaded = listener.wait_for("READY")
    assert "last reload succeeded" in reloaded["STATUS"]
    # The new workers serve; the old ones were told to drain and exit soon
    # (one may still take a connection in the milliseconds before it closes
    # its listener).
    wait_until(lambda: len(_workers(server.pid)) == 2 and not _workers(server.pid) & first, 10)
    assert not {_pid(server.port) for _ in range(50)} & first

    server.signal(signal.SIGTERM)
    stopping = listener.wait_for("STOPPING")
    assert stopping["STOPPING"] == "1"
    assert server.wait(15) == 0


def test_notify_ready_waits_for_every_worker(
    start_server: StartServer, listener: Listener, tmp_path: Path
) -> None:
    # A slow lifespan startup: READY=1 must not come before both workers serve.
    app = tmp_path / "slowstart.py"
    app.write_text(
        "import asyncio, os\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await receive()\n"
        "        await asyncio.sleep(1.0)\n"
        "        await send({'type': 'lifespan.startup.complete'})\n"
        "        await receive()\n"
        "        await send({'type': 'lifespan.shutdown.complete'})\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': str(os.getpid()).encode()})\n"
    )
    started = time.monotonic()
    server = start_server(
        "slowstart:app",
        "--workers",
        "2",
        *FAST,
        wait=False,
        app_dir=tmp_path,
        env={"NOTIFY_SOCKET": listener.address},
    )
    listener.wait_for("READY")
    assert time.monotonic() - started >= 1.0
    assert {_pid(server.port) for _ in range(50)} == _workers(server.pid)


def test_boot_failure_never_notifies_ready(start_server: StartServer, listener: Listener) -> None:
    server = start_server(
        "failing_startup:app", wait=False, env={"NOTIFY_SOCKET": listener.address}
    )
    assert server.wait(15) == 3
    with contextlib.suppress(AssertionError):
        listener.wait_for("READY", timeout=0.2)
    assert not [m for m in listener.messages if "READY" in m]


def test_watchdog_pings(start_server: StartServer, tmp_path: Path) -> None:
    listener = Listener(str(tmp_path / "notify.sock"))
    try:
        start_server(
            APP,
            *FAST,
            wait=False,
            env={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000"},
        )
        listener.wait_for("READY")
        started = time.monotonic()
        for _ in range(4):  # one every 0.2 s
            listener.wait_for("WATCHDOG", timeout=2)
        assert time.monotonic() - started < 3
    finally:
        listener.close()


# -- socket activation ----------------------------------------------------------------------

# What systemd does: the listening socket becomes fd 3, LISTEN_FDS=1, and
# LISTEN_PID is the pid of the process that is exec'd (the asgid master).
ACTIVATE = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "asgid", *sys.argv[2:]])
"""


ARGS = (APP, "--workers", "2", "--app-dir", str(APPS), *FAST)


@pytest.fixture
def activated(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """asgid started with a pre-bound listener as fd 3; yields (process, port, log)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    log = tmp_path / "asgid.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", ACTIVATE, str(listener.fileno()), *ARGS],
            cwd=ROOT,
            env=base_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
            start_new_session=True,
        )
    listener.close()  # from now on only asgid holds the socket
    try:
        yield proc, port, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_socket_activation_serves_on_the_inherited_socket(
    activated: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log = activated
    # Connections queue on the inherited socket until a worker accepts them.
    wait_until(lambda: len(_workers(proc.pid)) == 2, 15)
    pids: set[int] = set()

    def both_serve() -> bool:  # a worker still booting accepts nothing yet
        pids.add(_pid(port))
        return pids == _workers(proc.pid)

    wait_until(both_serve, 15, interval=0.01)
    assert pids == _workers(proc.pid), log.read_text()
    output = log.read_text()
    assert f"listening on 127.0.0.1:{port}" in output
    assert "8000" not in output  # [server].bind is ignored
    # A reload keeps serving on the same socket.
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(_workers(proc.pid)) == 2 and not _workers(proc.pid) & pids, 15)
    assert not {_pid(port) for _ in range(50)} & pids
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


# -- the unit files -----------------------------------------------------------------------


def _unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_service_unit_settings() -> None:
    service = _unit("asgid.service")
    assert service["ExecStart"] == ["/usr/local/bin/asgid -c /etc/asgid/server.toml"]
    assert service["Type"] in (["notify"], ["notify-reload"])
    if service["Type"] == ["notify"]:
        # A reload that fails makes `systemctl reload` fail: it waits on the control socket.
        (reload,) = service["ExecReload"]
        assert reload.startswith("/usr/local/bin/asgid ctl -c /etc/asgid/server.toml reload --wait")
        timeout = float(reload.split("--timeout ")[1])
        assert timeout < int(service["TimeoutStartSec"][0])
    assert service["KillMode"] == ["mixed"]
    # Longer than the default graceful timeout (30 s) plus the kill grace (3 s).
    assert int(service["TimeoutStopSec"][0]) > 33
    assert int(service["WatchdogSec"][0]) > 0
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[key] == ["yes"], key
    assert service["ProtectSystem"] == ["strict"]
    socket_unit = _unit("asgid.socket")
    assert socket_unit["ListenStream"]
    assert socket_unit["Service"] == ["asgid.service"]
    # `systemctl restart asgid` must not take the socket (and its queue) down
    # with the service, as docs/deployment.md promises.
    assert "PartOf" not in socket_unit
    assert "BindsTo" not in socket_unit


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify insists that ExecStart's program exists: point it at this checkout's.
    asgid = shutil.which("asgid", path=os.path.dirname(sys.executable))
    if asgid is None:
        pytest.skip("no asgid script next to the test interpreter")
    service = (UNITS / "asgid.service").read_text()
    assert "ExecStart=/usr/local/bin/asgid " in service
    (tmp_path / "asgid.service").write_text(service.replace("/usr/local/bin/asgid", asgid))
    shutil.copy(UNITS / "asgid.socket", tmp_path / "asgid.socket")
    result = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            str(tmp_path / "asgid.service"),
            str(tmp_path / "asgid.socket"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


# -- docs/deployment.md ---------------------------------------------------------------------

DEPLOYMENT = ROOT / "docs" / "deployment.md"


def test_deployment_doc_links_resolve() -> None:
    text = DEPLOYMENT.read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (DEPLOYMENT.parent / target).exists(), f"deployment.md links to missing {target}"


def test_deployment_doc_covers_signals_exit_codes_and_reload() -> None:
    import asgid.cli
    from asgid.supervisor._master import HANDLED_SIGNALS

    text = DEPLOYMENT.read_text()
    for signum in HANDLED_SIGNALS:
        if signum is not signal.SIGCHLD:
            name = signum.name.removeprefix("SIG")
            assert re.search(rf"^\|[^|\n]*`{name}`[^|\n]*\|", text, re.MULTILINE), name
    assert [int(code) for code in asgid.cli.ExitCode] == [0, 1, 2, 3, 4]
    for code in asgid.cli.ExitCode:
        assert re.search(rf"^\| `{int(code)}` \|", text, re.MULTILINE), f"exit code {code!r}"
    assert "systemctl reload asgid" in text
    assert "asgid.socket" in text


def test_notify_reload_with_a_broken_config_file(
    start_server: StartServer, listener: Listener, tmp_path: Path
) -> None:
    # systemd's Type=notify-reload waits for RELOADING=1 then READY=1 after each
    # SIGHUP, even one that changes nothing.
    config = tmp_path / "server.toml"
    config.write_text(f'[app]\ntarget = "{APP}"\n[workers]\ncount = 2\n')
    server = start_server(
        "-c", str(config), *FAST, wait=False, env={"NOTIFY_SOCKET": listener.address}
    )
    listener.wait_for("READY")
    workers = _workers(server.pid)
    config.write_text("[workers]\ncount = = 3\n")
    server.signal(signal.SIGHUP)
    assert "MONOTONIC_USEC" in listener.wait_for("RELOADING")
    ready = listener.wait_for("READY")
    assert "last reload failed" in ready["STATUS"]
    assert _workers(server.pid) == workers
    assert {_pid(server.port) for _ in range(20)} <= workers
