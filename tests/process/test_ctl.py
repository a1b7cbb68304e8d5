"""``asgid ctl`` and the control socket, black-box: real masters, real clients.

Every server runs ``python -m asgid -c server.toml`` (so ``asgid ctl -c
server.toml`` finds its ``auto`` socket) with ``$XDG_RUNTIME_DIR`` pointing at
a short private directory of the test; ``asgid ctl`` runs as ``python -m
asgid ctl``. Also here: the scrape-exact request counts, the ``process_*``
families and the TLS certificate's expiry on /metrics.
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cli_helpers import run_asgid
from harness import Process
from helpers import APPS, Server, StartServer, base_env, free_port, wait_until, write_cert
from prometheus_client.parser import text_string_to_metric_families
from supervision import ClientLoop, get, get_pid, worker_pids, write_app

APP = "supervised:app"


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short ``$XDG_RUNTIME_DIR`` (a Unix socket's path is limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ctl-"))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Ctl:
    """A server started from a config file, and ``asgid ctl -c`` that file."""

    def __init__(self, server: Server, config: Path, runtime: Path) -> None:
        self.server = server
        self.config = config
        self.env = {"XDG_RUNTIME_DIR": str(runtime)}

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return run_asgid("ctl", "-c", str(self.config), *args, env=self.env, timeout=timeout)

    def ok(self, *args: str, timeout: float = 30.0) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.ok("status", "--json"))
        return status

    def ready(self) -> dict[int, dict[str, Any]]:
        """Serving workers by slot, once every slot has exactly one and none
        starts or drains; waits for that."""
        found: dict[int, dict[str, Any]] = {}

        def settled() -> bool:
            status = self.status()
            workers = status["workers"]
            found.clear()
            found.update({w["slot"]: w for w in workers})
            master = status["master"]
            return (
                len(workers) == master["workers_wanted"]
                and all(w["state"] == "ready" for w in workers)
                and master["state"] == "running"
                and set(found) == set(range(master["workers_wanted"]))
            )

        wait_until(settled, timeout=20, interval=0.1)
        return dict(found)


def start_ctl(
    start_server: StartServer,
    tmp_path: Path,
    runtime: Path,
    *,
    workers: int = 2,
    app: str = APP,
    app_dir: Path = APPS,
    extra: str = "",
    args: tuple[str, ...] = (),
) -> Ctl:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[app]\ntarget = "{app}"\n[workers]\ncount = {workers}\ngraceful_timeout = 5\n'
        f"timeout = 5\n[logging]\naccess_log = false\n{extra}"
    )
    server = start_server(
        "-c", str(config), *args, app_dir=app_dir, env={"XDG_RUNTIME_DIR": str(runtime)}
    )
    ctl = Ctl(server, config, runtime)
    ctl.ready()
    return ctl


def requests(server: Server, count: int) -> None:
    with httpx.Client(timeout=10.0) as client:
        for _ in range(count):
            assert client.get(server.url + "/pid").status_code == 200


def scrape(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"http://{address}/metrics", timeout=10.0)
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def requests_total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == "asgid_requests_total")


# -- status ----------------------------------------------------------------------------


def test_status_shows_the_pids_generations_and_request_counts(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir)
    status = ctl.status()
    master = status["master"]
    assert master["pid"] == ctl.server.pid
    assert master["config_path"] == str(ctl.config)
    assert master["generation"] == 1
    assert master["last_reload"] is None
    assert {w["pid"] for w in status["workers"]} == worker_pids(ctl.server)
    assert {w["generation"] for w in status["workers"]} == {1}
    assert all(w["rss"] > 0 for w in status["workers"])
    # The counts are fresh: asked of the workers when status was, not a heartbeat old.
    before = {w["pid"]: w["requests"] for w in status["workers"]}
    served = [get_pid(ctl.server) for _ in range(25)]
    after = {w["pid"]: w["requests"] for w in ctl.status()["workers"]}
    assert {pid: after[pid] - before[pid] for pid in after} == {
        pid: served.count(pid) for pid in after
    }
    text = ctl.ok("status")
    assert f"master pid {ctl.server.pid}" in text
    for pid in after:
        assert f" {pid} " in text
    assert "SLOT  PID" in text


def test_status_watch_refreshes_until_interrupted(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir, workers=1)
    argv = ["ctl", "-c", str(ctl.config), "status", "--watch", "0.1"]
    watch = Process(
        [sys.executable, "-m", "asgid", *argv], log=tmp_path / "watch.log", env=base_env(**ctl.env)
    )
    try:
        wait_until(lambda: watch.output().count("master pid") >= 3, timeout=20)
        watch.signal(signal.SIGINT)
        try:
            code = watch.wait(10)
        except subprocess.TimeoutExpired:
            # Say why: an inherited SIG_IGN shows in SigIgn (see conftest.py).
            status = Path(f"/proc/{watch.proc.pid}/status").read_text()
            signals = [line for line in status.splitlines() if line.startswith(("State", "Sig"))]
            wchan = Path(f"/proc/{watch.proc.pid}/wchan").read_text()
            pytest.fail(
                f"still running 10 s after SIGINT: {signals} wchan={wchan}\n{watch.output()}"
            )
        assert code == 0, watch.output()
    finally:
        watch.stop()


# -- reload --wait ---------------------------------------------------------------------


def test_reload_wait_returns_once_every_worker_is_new(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    write_app(tmp_path / "live.py", "version one")
    ctl = start_ctl(start_server, tmp_path, runtime_dir, app="live:app", app_dir=tmp_path)
    old = {w["pid"] for w in ctl.status()["workers"]}
    write_app(tmp_path / "live.py", "version two")
    with ClientLoop(ctl.server.url, max_seconds=30) as loop:
        loop.wait_for(20)
        out = ctl.ok("reload", "--wait", "--timeout", "30")
        # Returned: the new generation serves, every worker is new, none drains
        # from the point of view of new connections.
        status = ctl.status()
        loop.wait_for(20)
    assert "reload succeeded: generation 2 serves" in out
    serving = [w for w in status["workers"] if w["state"] == "ready"]
    assert {w["generation"] for w in serving} == {2}
    assert len(serving) == 2
    assert not {w["pid"] for w in serving} & old
    assert status["master"]["last_reload"]["result"] == "succeeded"
    assert {get(ctl.server) for _ in range(10)} == {"version two"}
    assert loop.errors == []


def test_reload_wait_fails_with_the_apps_error_and_the_old_workers_serve(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    app = tmp_path / "live.py"
    write_app(app, "version one")
    ctl = start_ctl(start_server, tmp_path, runtime_dir, app="live:app", app_dir=tmp_path)
    old = worker_pids(ctl.server)
    app.write_text(app.read_text() + "\ndef broken(:\n")
    result = ctl.run("reload", "--wait")
    assert result.returncode == 4, result.stdout + result.stderr  # the app cannot be imported
    assert "SyntaxError" in result.stderr
    assert result.stderr.startswith("asgid ctl: error: ")
    as_json = ctl.run("reload", "--wait", "--json")
    assert as_json.returncode == 4
    failure = json.loads(as_json.stdout)
    assert failure["ok"] is False
    assert failure["kind"] == "app_load"
    assert "SyntaxError" in failure["error"]
    assert worker_pids(ctl.server) == old
    assert {get(ctl.server) for _ in range(10)} == {"version one"}
    last = ctl.status()["master"]["last_reload"]
    assert last["result"] == "failed"
    assert "SyntaxError" in last["reason"]


def test_reload_wait_fails_with_the_config_files_line(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir)
    old = worker_pids(ctl.server)
    good = ctl.config.read_text()
    ctl.config.write_text(good + "[workers]\ncont = 3\n")  # line 9
    result = ctl.run("reload", "--wait")  # finds the socket though the file is broken
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{ctl.config}:" in result.stderr
    assert "did you mean" in result.stderr or "invalid TOML" in result.stderr
    assert worker_pids(ctl.server) == old
    ctl.config.write_text(good)


def test_reload_without_wait_returns_at_once(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir)
    answer = json.loads(ctl.ok("reload", "--json"))
    assert answer == {"ok": True, "generation": 2, "result": "started"}
    wait_until(lambda: ctl.status()["master"]["generation"] == 2, timeout=20, interval=0.1)


# -- scale, recycle, stop, config --------------------------------------------------------


def test_scale_and_recycle_change_status_and_drop_no_request(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir)
    with ClientLoop(ctl.server.url, max_seconds=60) as loop:
        loop.wait_for(20)
        assert "scaling to 3 workers" in ctl.ok("scale", "+1")
        assert sorted(ctl.ready()) == [0, 1, 2]
        ctl.ok("scale", "4")
        assert sorted(ctl.ready()) == [0, 1, 2, 3]
        ctl.ok("scale", "-2")
        slots = ctl.ready()
        assert sorted(slots) == [0, 1]
        old = slots[0]["pid"]
        assert f"(pid {old})" in ctl.ok("recycle", "0")
        slots = ctl.ready()
        assert slots[0]["pid"] != old
        assert slots[0]["started_for"] == "manual"
        other = slots[1]["pid"]
        ctl.ok("recycle", str(other))  # by pid
        assert ctl.ready()[1]["pid"] != other
        loop.wait_for(20)
    assert loop.errors == []
    assert loop.done > 40


def test_refused_commands_say_why(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir)
    result = ctl.run("scale", "0")
    assert result.returncode == 1
    assert "at least 1 worker" in result.stderr
    result = ctl.run("recycle", "999999")
    assert result.returncode == 1
    assert "no worker with pid 999999" in result.stderr
    result = ctl.run("scale", "many")
    assert result.returncode == 2


def test_stop_drains_and_exits(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir)
    assert ctl.ok("stop") == "stopping gracefully\n"
    assert ctl.server.wait(20) == 0
    assert "graceful shutdown" in ctl.server.output()
    result = ctl.run("status")
    assert result.returncode == 1
    assert "no control socket" in result.stderr  # removed at exit


def test_stop_now(start_server: StartServer, tmp_path: Path, runtime_dir: Path) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir)
    ctl.ok("stop", "--now")
    assert ctl.server.wait(20) == 0
    assert "immediate shutdown" in ctl.server.output()


def test_config_shows_each_values_origin(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir, args=("--max-requests", "1000"))
    text = ctl.ok("config")
    assert f"count = 2  # {ctl.config}:4\n" in text
    assert "max_requests = 1000  # command line\n" in text
    assert "backlog = 2048  # default\n" in text
    settings = {s["key"]: s for s in json.loads(ctl.ok("config", "--json"))["settings"]}
    assert settings["workers.count"]["origin"] == f"{ctl.config}:4"


# -- the socket ------------------------------------------------------------------------------


def _connect_as(uid: int, gid: int, path: str) -> str:
    """Connect to ``path`` and ask for status as ``uid``: what came back, or the errno."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            try:
                sock.connect(path)
                try:
                    sock.sendall(b'{"cmd": "status"}\n')
                except BrokenPipeError:
                    pass  # a refusal is sent and the socket closed at once
                result = "answer:" + sock.recv(65536).decode()
            except OSError as exc:
                result = f"error:{exc.errno}"
            os.write(write, result.encode())
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return data.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another user needs root")
def test_a_peer_with_another_uid_is_refused(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no nobody user")
    ctl = start_ctl(start_server, tmp_path, runtime_dir)
    path = ctl.status()["master"]["control_socket"]
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    os.chmod(runtime_dir, 0o755)
    os.chmod(os.path.dirname(path), 0o755)
    # The file's mode keeps others out...
    assert _connect_as(nobody.pw_uid, nobody.pw_gid, path) == f"error:{13}"  # EACCES
    # ...and where it would not, SO_PEERCRED does.
    os.chmod(path, 0o666)
    answer = _connect_as(nobody.pw_uid, nobody.pw_gid, path)
    assert answer.startswith("answer:"), answer
    reply = json.loads(answer.removeprefix("answer:"))
    assert reply["ok"] is False
    assert reply["kind"] == "refused"
    assert f"uid {nobody.pw_uid}" in reply["error"]
    assert "refused a client running as uid" in ctl.server.output()
    assert ctl.status()["master"]["pid"] == ctl.server.pid  # root still gets in


def test_silent_clients_do_not_block_the_master(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    ctl = start_ctl(start_server, tmp_path, runtime_dir, extra=f'[metrics]\nbind = "{address}"\n')
    path = ctl.status()["master"]["control_socket"]
    silent = []
    try:
        for _ in range(40):  # more than the endpoint holds at once
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            sock.sendall(b'{"cmd": "sta')  # and never the rest
            silent.append(sock)
        started = time.monotonic()
        status = ctl.status()
        assert time.monotonic() - started < 5
        assert all(w["last_heartbeat"] < 2.5 for w in status["workers"])
        assert scrape(address)[("asgid_workers", frozenset({("state", "ready")}))] == 2
        assert get(ctl.server, "/pid")
        # A request line too long is answered and closed, not buffered for ever.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as big:
            big.settimeout(5)
            big.connect(path)
            big.sendall(b"x" * 8192)
            assert b'"kind":"bad_request"' in big.recv(65536)
    finally:
        for sock in silent:
            sock.close()


def test_an_explicit_socket_path_and_the_bare_word_ctl(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    path = runtime_dir / "control.sock"
    (tmp_path / "ctl.py").write_text((APPS / "supervised.py").read_text())
    # An app module named ctl is served: only a first argument of exactly `ctl` is the client.
    server = start_server("ctl:app", "--control-socket", str(path), app_dir=tmp_path)
    assert get_pid(server) in worker_pids(server)
    out = run_asgid("ctl", "--socket", str(path), "status", "--json", timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["master"]["app"] == "ctl:app"
    env = {"ASGID_CONTROL_SOCKET": str(path)}
    assert run_asgid("ctl", "status", env=env, timeout=30).returncode == 0
    usage = run_asgid("ctl", timeout=30)
    assert usage.returncode == 2
    assert "usage: asgid ctl" in usage.stderr


# -- scrape-exact metrics ------------------------------------------------------------------


def test_a_scrape_right_after_n_requests_reads_exactly_n_more(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    ctl = start_ctl(start_server, tmp_path, runtime_dir, extra=f'[metrics]\nbind = "{address}"\n')
    before = requests_total(scrape(address))
    for n in (100, 1, 37):
        requests(ctl.server, n)
        after = requests_total(scrape(address))  # no wait for a heartbeat
        assert after - before == n
        before = after
    # Across a recycle the counts carry on; they never go backwards.
    ctl.ok("recycle", "0")
    requests(ctl.server, 10)
    assert requests_total(scrape(address)) == before + 10
    ctl.ready()
    assert requests_total(scrape(address)) == before + 10


def test_process_metrics_of_the_master_and_each_slot(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    ctl = start_ctl(start_server, tmp_path, runtime_dir, extra=f'[metrics]\nbind = "{address}"\n')
    samples = scrape(address)
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
    ):
        labels = sorted(
            dict(ls).get("slot", "master") for (n, ls), _ in samples.items() if n == name
        )
        assert labels == ["0", "1", "master"], name
    assert samples[("process_resident_memory_bytes", frozenset())] > 0
    promtool = shutil.which("promtool")
    if promtool:
        body = httpx.get(f"http://{address}/metrics", timeout=10).content
        check = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
    assert ctl.status()  # still answering


def test_certificate_expiry_metric_matches_the_certificates_not_after(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    not_after = datetime.datetime(2031, 5, 17, 12, 30, tzinfo=datetime.timezone.utc)
    ca = trustme.CA()
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_cert(ca.issue_cert("127.0.0.1", not_after=not_after), certfile, keyfile)
    address = f"127.0.0.1:{free_port()}"
    ctl = start_ctl(
        start_server,
        tmp_path,
        runtime_dir,
        extra=f'[metrics]\nbind = "{address}"\n'
        f'[server]\nssl_certfile = "{certfile}"\nssl_keyfile = "{keyfile}"\n',
    )
    samples = scrape(address)
    expiry = {
        dict(labels)["listener"]: value
        for (name, labels), value in samples.items()
        if name == "asgid_tls_certificate_expiry_timestamp_seconds"
    }
    assert expiry == {f"127.0.0.1:{ctl.server.port}": not_after.timestamp()}


SLOW_APP = """\
import asyncio
import os
import pathlib

DELAY = pathlib.Path(__file__).with_name("delay")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(float(DELAY.read_text()))
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_reload_wait_times_out_and_follows_a_newer_reload(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    (tmp_path / "slow.py").write_text(SLOW_APP)
    (tmp_path / "delay").write_text("0")
    ctl = start_ctl(
        start_server, tmp_path, runtime_dir, workers=1, app="slow:app", app_dir=tmp_path
    )
    (tmp_path / "delay").write_text("2")
    result = ctl.run("reload", "--wait", "--timeout", "0.5")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "timed out waiting for the reload" in result.stderr
    # A waiter waits for the newest reload: one started meanwhile replaces its own.
    argv = ["ctl", "-c", str(ctl.config), "reload", "--wait"]
    waiter = Process(
        [sys.executable, "-m", "asgid", *argv], log=tmp_path / "waiter.log", env=base_env(**ctl.env)
    )
    try:
        wait_until(
            lambda: ctl.status()["master"]["pending_generation"] == 3, timeout=10, interval=0.05
        )
        assert json.loads(ctl.ok("reload", "--json"))["generation"] == 4
        assert waiter.wait(30) == 0, waiter.output()
    finally:
        waiter.stop()
    assert "generation 4 serves" in waiter.output()
    assert [w["generation"] for w in ctl.ready().values()] == [4]


def test_a_second_master_from_the_same_file_runs_without_a_socket(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    first = start_ctl(start_server, tmp_path, runtime_dir, workers=1)
    # A blue/green switch: the same file, another port.
    second = start_server(
        "-c", str(first.config), app_dir=APPS, env={"XDG_RUNTIME_DIR": str(runtime_dir)}
    )
    wait_until(lambda: "no control socket" in second.output(), timeout=10)
    assert "another master is listening there" in second.output()
    assert get_pid(second) in worker_pids(second)
    assert first.status()["master"]["pid"] == first.server.pid
    path = first.status()["master"]["control_socket"]
    second.stop()
    assert os.path.exists(path)  # the first master's socket stays
    assert first.status()["master"]["pid"] == first.server.pid


def _ask(path: str, line: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {data!r}"
            data += chunk
        assert sock.recv(1) == b""  # one answer, then the master closes
    answer: dict[str, Any] = json.loads(data)
    return answer


def test_the_protocol_answers_bad_requests_and_scripts(
    start_server: StartServer, tmp_path: Path, runtime_dir: Path
) -> None:
    ctl = start_ctl(start_server, tmp_path, runtime_dir)
    path = ctl.status()["master"]["control_socket"]
    assert _ask(path, b"not json\n")["kind"] == "bad_request"
    assert _ask(path, b"[1, 2]\n")["kind"] == "bad_request"
    unknown = _ask(path, b'{"cmd": "dance"}\n')
    assert unknown["kind"] == "bad_request"
    assert "expected one of config, recycle, reload, scale, status, stop" in unknown["error"]
    assert _ask(path, b'{"cmd": "scale", "count": "3"}\n')["kind"] == "bad_request"
    status = _ask(path, b'{"cmd": "status"}\n')
    assert status["ok"] is True
    assert status["status"]["master"]["pid"] == ctl.server.pid
    assert _ask(path, b'{"cmd": "scale", "delta": 1}\n') == {"ok": True, "workers": 3}
    assert sorted(ctl.ready()) == [0, 1, 2]
