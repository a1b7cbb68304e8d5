"""Workers as an unprivileged user: ``[process].user`` and ``group``, the master as root.

These tests need root (they are skipped otherwise) and use the system's
``nobody`` user and ``nogroup`` group. A worker imports the application, and
Python imports lazily, as that user: the interpreter, the virtualenv and the
application must be readable by nobody. The app is copied into a
world-readable temporary directory (pytest's ``tmp_path`` sits in a 0700 one),
and a probe run as nobody skips the tests, saying why, where this Python
cannot be (a virtualenv in a 0700 home, say).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import trustme
from helpers import (
    APPS,
    ROOT,
    Server,
    StartServer,
    base_env,
    client_context,
    free_port,
    wait_until,
)
from helpers import write_cert as write_cert_files

USER, GROUP = "nobody", "nogroup"
APP = "metrics_app:app"  # GET / answers, GET /pid says which worker did

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture(scope="module")
def ids() -> tuple[int, int]:
    """nobody's uid and nogroup's gid."""
    try:
        return pwd.getpwnam(USER).pw_uid, grp.getgrnam(GROUP).gr_gid
    except KeyError:
        pytest.skip(f"no {USER} user or {GROUP} group on this system")


def as_user(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with this Python as nobody:nogroup, without root's other groups."""
    return subprocess.run(
        [sys.executable, "-c", code],
        user=USER,
        group=GROUP,
        extra_groups=[],
        cwd=cwd,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def app_dir(ids: tuple[int, int]) -> Iterator[Path]:
    """A world-readable directory holding the test app; skips where nobody cannot run it."""
    path = Path(tempfile.mkdtemp(prefix="asgid-priv-"))
    try:
        path.chmod(0o755)
        shutil.copy(APPS / "metrics_app.py", path)
        try:
            probe = as_user("import asgid, asgid.worker._server, prometheus_client, ssl", path)
            problem = probe.stderr.strip().splitlines()[-1] if probe.returncode else ""
        except OSError as exc:  # the interpreter itself cannot be executed
            problem = str(exc)
        if problem:
            pytest.skip(
                f"{USER} cannot run {sys.executable} and import asgid from {ROOT} "
                f"(make the interpreter, the virtualenv and the checkout world-readable): "
                f"{problem}"
            )
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_as_user(
    start_server: StartServer, app_dir: Path, *args: str, workers: int = 2, **kw: object
) -> Server:
    server = start_server(
        APP,
        "--user",
        USER,
        "--group",
        GROUP,
        "--workers",
        str(workers),
        "--no-access-log",
        *args,
        app_dir=app_dir,
        cwd=app_dir,
        **kw,
    )
    wait_until(lambda: server.output().count("ready, generation") >= workers, timeout=15)
    return server


def workers(server: Server) -> list[int]:
    return [c.pid for c in psutil.Process(server.pid).children() if c.status() != "zombie"]


def process_ids(pid: int) -> tuple[list[int], list[int], list[int]]:
    """Real, effective, saved and filesystem uids; the same gids; supplementary groups."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (
        [int(x) for x in fields["Uid"].split()],
        [int(x) for x in fields["Gid"].split()],
        [int(x) for x in fields["Groups"].split()],
    )


def served_by(url: str, **kw: Any) -> int:
    """The pid of the worker that answered ``GET /pid``."""
    with httpx.Client(timeout=5, **kw) as client:
        response = client.get(f"{url}/pid")
    assert response.status_code == 200, response.text
    return int(response.text)


def assert_runs_as(pid: int, uid: int, gid: int) -> None:
    uids, gids, groups = process_ids(pid)
    assert uids == [uid] * 4, uids
    assert gids == [gid] * 4, gids
    assert set(groups) <= {gid}, groups  # root's supplementary groups are gone


@needs_root
def test_workers_run_as_user_and_group_and_the_master_stays_root(
    start_server: StartServer, app_dir: Path, ids: tuple[int, int]
) -> None:
    server = start_as_user(start_server, app_dir)
    pids = workers(server)
    assert len(pids) == 2
    for pid in pids:
        assert_runs_as(pid, *ids)
    assert process_ids(server.pid)[0] == [0] * 4
    assert served_by(server.url) in pids


@needs_root
def test_pidfile_cannot_be_written_by_the_workers_user(
    start_server: StartServer, app_dir: Path
) -> None:
    pidfile = app_dir / "asgid.pid"
    server = start_as_user(start_server, app_dir, "--pidfile", str(pidfile))
    st = pidfile.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)
    assert pidfile.read_text() == f"{server.pid}\n"
    read = as_user(f"print(open({str(pidfile)!r}).read().strip())", app_dir)
    assert read.stdout.strip() == str(server.pid), read.stderr  # the probe itself works
    for mode in ("r+", "a", "w"):
        write = as_user(f"open({str(pidfile)!r}, {mode!r})", app_dir)
        assert write.returncode != 0
        assert "PermissionError" in write.stderr, write.stderr
    assert "could replace it" not in server.output()
    assert pidfile.read_text() == f"{server.pid}\n"


@needs_root
def test_pidfile_in_a_directory_the_workers_user_can_write_is_warned_about(
    start_server: StartServer, app_dir: Path, ids: tuple[int, int]
) -> None:
    theirs = app_dir / "run"
    theirs.mkdir()
    os.chown(theirs, *ids)
    server = start_as_user(start_server, app_dir, "--pidfile", str(theirs / "asgid.pid"), workers=1)
    assert (theirs / "asgid.pid").stat().st_uid == 0
    assert "workers can write in the directory of the pidfile" in server.output()


@needs_root
def test_a_tls_key_only_root_can_read(
    start_server: StartServer, app_dir: Path, ids: tuple[int, int]
) -> None:
    ca = trustme.CA()
    certfile, keyfile = app_dir / "cert.pem", app_dir / "key.pem"
    write_cert_files(ca.issue_cert("127.0.0.1"), certfile, keyfile)
    keyfile.chmod(0o600)
    denied = as_user(f"open({str(keyfile)!r}).read()", app_dir)
    assert "PermissionError" in denied.stderr, denied.stderr  # the key really is root's
    server = start_as_user(
        start_server, app_dir, "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)
    )
    url = f"https://127.0.0.1:{server.port}"
    assert_runs_as(served_by(url, verify=client_context(ca)), *ids)
    # New workers read the key again, as root, before they drop to nobody.
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reload finished" in server.output(), timeout=20)
    assert_runs_as(served_by(url, verify=client_context(ca)), *ids)


@needs_root
def test_app_metrics_work_as_the_workers_user_and_the_master_follows_no_link(
    start_server: StartServer, app_dir: Path, ids: tuple[int, int]
) -> None:
    tmp = app_dir / "tmp"  # where the master makes its multiprocess directory
    tmp.mkdir()
    metrics = f"127.0.0.1:{free_port()}"
    server = start_as_user(
        start_server,
        app_dir,
        "--metrics-bind",
        metrics,
        env={"TMPDIR": str(tmp), "PROMETHEUS_MULTIPROC_DIR": ""},
    )
    (directory,) = tmp.glob("asgid-metrics-*")
    assert directory.stat().st_uid == ids[0]
    with httpx.Client(timeout=5) as client:
        for _ in range(10):
            assert client.get(server.url + "/").status_code == 200

    def hits() -> float:
        body = httpx.get(f"http://{metrics}/metrics", timeout=5).text
        for line in body.splitlines():
            if line.startswith('metrics_app_hits_total{path="other"}'):
                return float(line.split()[-1])
        return 0.0

    wait_until(lambda: hits() == 10.0, timeout=10)
    files = list(directory.glob("counter_*.db"))
    assert files
    assert {f.stat().st_uid for f in files} == {ids[0]}

    # A worker could leave a link where the master (root) writes the merged totals
    # of dead workers: the master must replace the link, not write through it.
    victim = app_dir / "victim"
    victim.write_text("untouched\n")
    (directory / "counter_archive.db").symlink_to(victim)
    # The worker that answers /pid (the 11th hit) has counted something: kill it,
    # and its file is merged into the archive.
    os.kill(served_by(server.url), signal.SIGKILL)
    wait_until(lambda: not (directory / "counter_archive.db").is_symlink(), timeout=10)
    assert victim.read_text() == "untouched\n"
    assert (directory / "counter_archive.db").stat().st_uid == 0
    wait_until(lambda: hits() == 11.0, timeout=10)  # nothing lost in the merge
    assert "Traceback" not in server.output()


@needs_root
def test_unix_socket_served_by_workers_as_the_user(
    start_server: StartServer, app_dir: Path, ids: tuple[int, int]
) -> None:
    path = app_dir / "asgid.sock"  # short: AF_UNIX paths are limited to ~100 bytes
    server = start_as_user(
        start_server, app_dir, "--uds", str(path), "--uds-mode", "660", no_bind=True, wait=False
    )
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o660)  # bound by the master
    transport = httpx.HTTPTransport(uds=str(path))
    pid = served_by("http://localhost", transport=transport)
    assert pid in workers(server)
    assert_runs_as(pid, *ids)


def test_an_unknown_user_is_a_configuration_error(start_server: StartServer) -> None:
    server = start_server(APP, "--user", "no-such-user-for-asgid", wait=False)
    assert server.wait(15) == 2
    assert "process.user: no such user: 'no-such-user-for-asgid'" in server.output()
    assert "Traceback" not in server.output()
