"""The one way tests, bench/ and scripts/ start and stop processes.

``Process`` runs a command in a session of its own (so its process group is
everything it started), sends its output to a log file, and ``stop()`` ends
the whole group: SIGTERM, a deadline, then SIGKILL for anything left,
zombies aside. Every wait here has a deadline and polls state.

Standard library only, so the unit tests, the benchmarks and the scripts can
import it whatever else is installed: bench/ and scripts/ put this folder on
``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it is true; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


def _stat(pid: str) -> list[bytes] | None:
    """/proc/PID/stat's fields after the command: state, ppid, pgrp, session, ..."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def session_members(sid: int) -> list[int]:
    """The live processes of session ``sid`` but its leader: what a test's process started.

    asgid's workers lead process groups of their own, so stopping the master's
    group alone would leave them (and what they started) to stop by themselves.
    """
    members = []
    for entry in os.scandir("/proc"):
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields and int(fields[3]) == sid and int(entry.name) != sid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) succeeds for zombies too: look for a live member.
    for entry in os.scandir("/proc"):
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


class Overran(TimeoutError):
    """A command ``run`` waited for did not finish in time; what it printed is kept."""

    def __init__(self, cmd: Sequence[str], timeout: float, stdout: str, stderr: str) -> None:
        super().__init__(f"{list(cmd)} did not finish within {timeout:g}s")
        self.stdout, self.stderr = stdout, stderr


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    merge_stderr: bool = False,
    grace: float = 0.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to completion in a session of its own and return what it printed.

    Past ``timeout`` its session gets SIGTERM, ``grace`` seconds to stop what it
    started, then SIGKILL; ``Overran`` is raised with the output so far.
    """
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd or ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if grace:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        for pid in [proc.pid, *session_members(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise Overran(cmd, timeout, out or "", err or "") from None
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out or "", err or "")


class Process:
    """A command in its own session, its stdout and stderr in ``log``."""

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        log: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.cmd = list(cmd)
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=cwd or ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=preexec_fn,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def wait_listening(self, port: int, host: str = HOST, timeout: float = 15.0) -> None:
        """Until ``host:port`` accepts a connection; fails at once if the process exits."""

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.cmd[0]} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                socket.create_connection((host, port), timeout=0.5).close()
            except OSError:
                return False
            return True

        wait_until(listening, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group; SIGKILL to whatever is left of the session after ``timeout``.

        The process leads its own session (and group), so the session is
        everything it started, whatever groups those made for themselves.
        """
        sid = self.proc.pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        if self.proc.poll() is not None:  # stopped: give its children a moment to follow
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not session_members(sid), timeout=2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sid, signal.SIGKILL)
        for pid in session_members(sid):  # and the groups its children lead
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()
