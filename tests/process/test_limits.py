"""The open-file limit: asgid raises its soft RLIMIT_NOFILE to the hard limit.

asgid is started with a lowered limit (``preexec_fn`` runs in the child
before Python starts asgid), and ``/proc/<pid>/limits`` of the master and of
each worker says what they really got.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from helpers import APPS, Server, StartServer, base_env, free_port, wait_until
from supervision import ready_pids

APP = "httpapp:app"


def nofile(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of ``pid`` as the kernel reports it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files line for pid {pid}")


def limit_nofile(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def start_with_workers(start_server: StartServer, *args: str, **kw: object) -> Server:
    server = start_server(APP, "--workers", "2", "--no-access-log", *args, **kw)
    wait_until(lambda: len(ready_pids(server)) >= 2, timeout=15)
    return server


def workers(server: Server) -> list[int]:
    return [c.pid for c in psutil.Process(server.pid).children() if c.status() != "zombie"]


def raisable_hard_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise from 1024")
    return hard


def test_soft_limit_is_raised_to_the_hard_limit_for_master_and_workers(
    start_server: StartServer,
) -> None:
    hard = raisable_hard_limit()
    server = start_with_workers(start_server, preexec_fn=limit_nofile(1024, hard))
    pids = workers(server)
    assert len(pids) == 2
    for pid in [server.pid, *pids]:
        assert nofile(pid) == (hard, hard), pid
    assert f"raised the open file limit (RLIMIT_NOFILE) from 1024 to {hard}" in server.output()
    assert "fewer than" not in server.output()


def test_a_low_hard_limit_is_warned_about(start_server: StartServer) -> None:
    server = start_with_workers(start_server, preexec_fn=limit_nofile(1024, 1024))
    for pid in [server.pid, *workers(server)]:
        assert nofile(pid) == (1024, 1024)
    assert (
        "the open file limit (RLIMIT_NOFILE) is 1024, and so is the hard limit: "
        "each worker can hold fewer than 1024 connections"
    ) in server.output()


def test_asgid_run_raises_the_soft_limit_too(tmp_path: Path) -> None:
    # asgid.run() serves in its own process, with no master.
    hard = raisable_hard_limit()
    code = (
        f"import asgid; asgid.run('httpapp:app', host='127.0.0.1', port={free_port()}, "
        f"app_dir={str(APPS)!r})"
    )
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=base_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limit_nofile(1024, hard),
        )
    try:

        def raised() -> bool:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            return nofile(proc.pid) == (hard, hard)

        wait_until(raised, timeout=15)
        wait_until(lambda: "raised the open file limit" in (tmp_path / "run.log").read_text())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
